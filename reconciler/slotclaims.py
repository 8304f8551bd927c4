"""One node's side of run claims (`reconciler.state.claims`): several daemons sharing one state
store run each slot exactly once.

Every daemon computes the same fire times from the same revision; before the runner admits a
run it claims the slot here (a scheduled or drill slot by its fire time, a manual run by the
time of its request), naming this node and holding a lease that `keep_alive` renews while the
run goes on. A node whose applied revision is older than the newest any live node has applied
claims nothing until it caught up (`reconciler.state.nodes.behind`): a node cut off from the
remote never runs a task the others have deleted. A claim whose lease expired (its node died) is
found by `expired_elsewhere` and taken over at most once (`take_over`).

Slots due at the same moment are claimed in each node's own order (`claim_order`): every node
walks the same list, but starting at its own share of it, so that the nodes do not all contend
for the same slot, one at a time in lockstep, and each of them claims its share first.

Blocking (every call reaches the state store): the runner calls it from its threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from enum import Enum
from typing import TypeVar

from reconciler.models import ResolvedTask
from reconciler.state.claims import Claim, ClaimRefusal, RunClaims, SlotKey
from reconciler.state.nodes import NodeRegistry, behind
from reconciler.types import Clock

logger = logging.getLogger(__name__)

DEFAULT_LEASE = timedelta(seconds=60)
_NO_LIMIT = 2**31 - 1  # a removed task's take-over runs nothing: no server limit applies


class Behind(Enum):
    """Why this node claimed nothing: its applied revision is older than another live node's."""

    BEHIND = "behind"


Claimed = Claim | ClaimRefusal | Behind
# The applied revision and its commit time (None before the first reconcile).
Applied = Callable[[], tuple[str | None, datetime | None]]
Item = TypeVar("Item")


def share_first(items: Sequence[Item], node_id: str, live_nodes: Collection[str]) -> list[Item]:
    """`items` (in the same order on every node) rotated to start at this node's share: with n
    live nodes, the one of rank k (by id) starts k/n of the way along. Unchanged when the node is
    alone or not among `live_nodes` (it has not been seen yet)."""
    ranked = sorted(live_nodes)
    if len(ranked) < 2 or node_id not in ranked:
        return list(items)
    start = len(items) * ranked.index(node_id) // len(ranked)
    return [*items[start:], *items[:start]]


def server_key(task: ResolvedTask) -> str:
    """What per-server limits count by across nodes: the server entry, as every node has it."""
    return f"server-{task.server.id}"


class SlotClaims:
    def __init__(
        self,
        claims: RunClaims,
        nodes: NodeRegistry,
        *,
        node_id: str,
        clock: Clock,
        applied: Applied,
        lease: timedelta = DEFAULT_LEASE,
    ) -> None:
        if lease <= timedelta(0):
            raise ValueError(f"the lease must be positive, got {lease}")
        self.node_id = node_id
        self.lease = lease
        self._claims = claims
        self._nodes = nodes
        self._clock = clock
        self._applied = applied
        self._started = clock.now()
        self._lock = threading.Lock()
        self._held: dict[SlotKey, Claim] = {}
        self._live_nodes: tuple[str, ...] = ()  # as of the last keep_alive

    def claim(self, task: ResolvedTask, slot: datetime) -> Claimed:
        """Claim `slot` of `task` for this node, or why not."""
        if self.behind():
            return Behind.BEHIND
        now = self._clock.now()
        claimed = self._claims.claim(
            SlotKey(task.id, slot),
            server_key(task),
            task.server.max_parallel_runs,
            self.node_id,
            now,
            now + self.lease,
        )
        if isinstance(claimed, Claim):
            with self._lock:
                self._held[claimed.key] = claimed
        return claimed

    def take_over(self, task: ResolvedTask | None, expired: Claim) -> Claim | None:
        """Claim again, for this node, the slot of `expired` (its node stopped renewing it);
        None when another node took it first or the server is full (try again later). `task`:
        the task as this node has it, None when it was removed (its dead run is still ended,
        and the slot taken only for that)."""
        if self.behind():
            return None
        now = self._clock.now()
        server = expired.server if task is None else server_key(task)
        room = _NO_LIMIT if task is None else task.server.max_parallel_runs
        taken = self._claims.take_over(
            expired.key, server, room, self.node_id, now, now + self.lease
        )
        if taken is not None:
            with self._lock:
                self._held[taken.key] = taken
        return taken

    def held(self) -> int:
        """How many claims this node holds now."""
        with self._lock:
            return len(self._held)

    def attach(self, claim: Claim, run_id: int) -> None:
        self._claims.attach_run(claim.key, self.node_id, run_id)

    def release(self, claim: Claim) -> None:
        """The claim's run ended (or never started): the slot stays claimed, the lease ends."""
        with self._lock:
            self._held.pop(claim.key, None)
        self._claims.release(claim.key, self.node_id)

    def keep_alive(self) -> list[Claim]:
        """Renew every claim this node holds and record that the node is up; returns the claims
        it lost (expired meanwhile, or taken over: their runs should stop)."""
        revision, revision_time = self._applied()
        now = self._clock.now()
        self._nodes.heartbeat(self.node_id, revision, revision_time, now, self._started)
        seconds = self.lease.total_seconds()
        live = tuple(node.node_id for node in self._nodes.nodes() if node.live(now, seconds))
        with self._lock:
            self._live_nodes = live
            held = list(self._held.values())
        lost = [
            claim
            for claim in held
            if not self._claims.renew(claim.key, self.node_id, now, now + self.lease)
        ]
        with self._lock:
            for claim in lost:
                self._held.pop(claim.key, None)
        return lost

    def claim_order(self, due: list[Item]) -> list[Item]:
        """`due`, slots due at once in the same order on every node, in the order this node
        claims them (`share_first` among the nodes live at the last `keep_alive`). Never blocks."""
        with self._lock:
            live = self._live_nodes
        return share_first(due, self.node_id, live)

    def expired_elsewhere(self) -> list[Claim]:
        """Claims whose lease ended without a release: their node died (or this one did, before
        a restart). Oldest first."""
        with self._lock:
            held = set(self._held)
        return [claim for claim in self._claims.expired(self._clock.now()) if claim.key not in held]

    def behind(self) -> bool:
        _, revision_time = self._applied()
        newest = self._nodes.newest_live_revision_time(
            self._clock.now(), self.lease.total_seconds()
        )
        return behind(revision_time, newest)
