"""Run claims: the interface every state backend implements, so that several daemons sharing one
store run each slot exactly once.

A slot is (task id, fire time): a scheduled slot's fire time, or for a manual run the request
time (unique per request). A daemon runs a slot only after `claim` returned a `Claim` for it.
The store keeps one row per claim, unique on (task_id, slot, attempt): attempt 0 is the claim,
attempt 1 the one take-over a slot may get. In PostgreSQL that is `INSERT ... ON CONFLICT
(task_id, slot, attempt) DO NOTHING`, and a claim is granted iff a row was inserted.
The row names the node and holds a lease (`lease_until`); the running node renews it
(`renew`) while the run goes on and ends it (`release`) when the run finished.

Per-server limits hold across nodes: `claim` counts the live claims of the same server (lease
not expired at `now`, not released) in the same transaction that inserts the row (SQLite:
BEGIN IMMEDIATE; PostgreSQL: a transaction-scoped advisory lock on the server, or SERIALIZABLE),
so two nodes never both see room for one more run. A task never has two live claims at once.

A node that dies leaves a claim whose lease expires. `take_over` lets another node claim that
slot once: it marks the expired claim as taken over (a conditional UPDATE on `taken_over_by IS
NULL AND lease_until < now AND attempt = 0`) and inserts attempt 1, so exactly one caller gets a
new lease on the slot, and a take-over is never taken over itself. The dead node's run record is
ended by the caller (failed, reason naming the node) whether or not the slot runs again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Protocol


class ClaimRefusal(Enum):
    """Why `claim` granted nothing."""

    TAKEN = "taken"  # the slot was claimed before (by any node, this one included)
    TASK_BUSY = "task busy"  # the task has a live claim for another slot
    SERVER_FULL = "server full"  # the server has `max_parallel` live claims already


@dataclass(frozen=True, slots=True)
class SlotKey:
    task_id: int
    slot: datetime


@dataclass(frozen=True, slots=True)
class Claim:
    """A live or ended claim of one slot by one node."""

    task_id: int
    slot: datetime
    server: str
    node_id: str
    claimed_at: datetime
    lease_until: datetime
    released: bool
    taken_over_by: str | None  # the node that took the slot over after this claim's lease expired
    run_id: int | None  # the run record the claiming node started for it, once started
    attempt: int = 0  # 0: the first claim of the slot, 1: its take-over

    @property
    def key(self) -> SlotKey:
        return SlotKey(self.task_id, self.slot)

    def live(self, now: datetime) -> bool:
        """Held: not released, not taken over, lease not expired at `now`."""
        return not self.released and self.taken_over_by is None and now < self.lease_until


class RunClaims(Protocol):
    def claim(
        self,
        key: SlotKey,
        server: str,
        max_parallel: int,
        node_id: str,
        now: datetime,
        lease_until: datetime,
    ) -> Claim | ClaimRefusal:
        """Claim `key` for `node_id` until `lease_until`, in one transaction: refused if any row
        for the slot exists (`TAKEN`, whatever its state: a slot is claimed at most once), if the
        task has a live claim (`TASK_BUSY`), or if `server` has `max_parallel` live claims
        (`SERVER_FULL`); otherwise the row is inserted and returned."""
        ...

    def attach_run(self, key: SlotKey, node_id: str, run_id: int) -> None:
        """The run record `run_id` started for the claim `node_id` holds on `key`."""
        ...

    def renew(self, key: SlotKey, node_id: str, now: datetime, lease_until: datetime) -> bool:
        """Extend the claim `node_id` holds on `key` to `lease_until`. False (and nothing
        changed) if it is no longer live at `now`: expired, released or taken over; the run
        should then stop, another node may be running the slot."""
        ...

    def release(self, key: SlotKey, node_id: str) -> None:
        """The run for the claim `node_id` holds on `key` ended; the slot stays claimed."""
        ...

    def expired(self, now: datetime) -> list[Claim]:
        """Claims neither released nor taken over whose lease ended before `now`, oldest first."""
        ...

    def take_over(
        self,
        key: SlotKey,
        server: str,
        max_parallel: int,
        node_id: str,
        now: datetime,
        lease_until: datetime,
    ) -> Claim | None:
        """Claim an expired slot again for `node_id`, at most once ever per slot: in one
        transaction mark the expired claim taken over by `node_id` (only if its lease ended
        before `now` and nobody took it over yet) and replace it by a live claim of
        `node_id` (same per-server count as `claim`). The old claim, as it was, is returned
        by `expired`; None if another node took it over first, it was renewed or released
        meanwhile, or the server is full (then it stays expired and is tried again later)."""
        ...

    def live_claims(self, now: datetime) -> list[Claim]:
        """Every live claim at `now`, for status pages and metrics."""
        ...

    def forget_before(self, before: datetime) -> int:
        """Drop ended claims whose slot is before `before`; returns how many."""
        ...
