"""The node registry: the interface every state backend implements.

A node is one daemon sharing the store with others, named by `--node-id`. Each daemon upserts its
row at start and on every check (`heartbeat`): the git revision it has applied, that revision's
commit time, when it was last seen and when it started. In PostgreSQL that is one
`INSERT ... ON CONFLICT (node_id) DO UPDATE`.

"Older revision" is decided by commit time (`revision_time`, the committer time of the applied
commit, UTC), not by comparing hashes: a node whose applied revision's commit time is before the
newest commit time any live node has applied is behind and claims nothing until it caught up
(`behind`). A node cut off from its remote keeps its old revision while the others apply newer
ones, so it stops claiming as soon as one live node applied a newer commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class NodeRecord:
    node_id: str
    revision: str | None  # applied commit (hex), None before the first load
    revision_time: datetime | None  # its commit time
    last_seen: datetime
    started_at: datetime

    def live(self, now: datetime, lease: float) -> bool:
        """Seen within the last `lease` seconds before `now`."""
        return (now - self.last_seen).total_seconds() <= lease


class NodeRegistry(Protocol):
    def heartbeat(
        self,
        node_id: str,
        revision: str | None,
        revision_time: datetime | None,
        now: datetime,
        started_at: datetime,
    ) -> None:
        """`node_id` is up at `now` with `revision` applied; replaces its row (a node that
        restarted gets its new `started_at`)."""
        ...

    def nodes(self) -> list[NodeRecord]:
        """Every node ever registered (not forgotten), by node id."""
        ...

    def newest_live_revision_time(self, now: datetime, lease: float) -> datetime | None:
        """The newest `revision_time` among nodes live at `now` (see `NodeRecord.live`)."""
        ...

    def forget_before(self, before: datetime) -> int:
        """Drop nodes last seen before `before`; returns how many."""
        ...


def behind(own_revision_time: datetime | None, newest_live: datetime | None) -> bool:
    """Whether a node with `own_revision_time` applied must claim nothing: it has no revision
    yet, or a live node applied a commit newer than its own."""
    if own_revision_time is None:
        return True
    return newest_live is not None and own_revision_time < newest_live
