"""The node registry in SQLite: one row per node id."""

from __future__ import annotations

from datetime import datetime, timedelta

from reconciler.state.nodes import NodeRecord
from reconciler.state.sqlite.connection import (
    SqliteConnection,
    from_text,
    optional_time,
    to_text,
)


class SqliteNodeRegistry:
    def __init__(self, connection: SqliteConnection) -> None:
        self._connection = connection

    def heartbeat(
        self,
        node_id: str,
        revision: str | None,
        revision_time: datetime | None,
        now: datetime,
        started_at: datetime,
    ) -> None:
        with self._connection.write() as db:
            db.execute(
                "INSERT INTO nodes (node_id, revision, revision_time, last_seen, started_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET"
                " revision = excluded.revision, revision_time = excluded.revision_time,"
                " last_seen = excluded.last_seen, started_at = excluded.started_at",
                (
                    node_id,
                    revision,
                    None if revision_time is None else to_text(revision_time),
                    to_text(now),
                    to_text(started_at),
                ),
            )

    def nodes(self) -> list[NodeRecord]:
        with self._connection.locked() as db:
            rows = db.execute(
                "SELECT node_id, revision, revision_time, last_seen, started_at FROM nodes"
                " ORDER BY node_id"
            ).fetchall()
        return [
            NodeRecord(
                node_id=row["node_id"],
                revision=row["revision"],
                revision_time=optional_time(row["revision_time"]),
                last_seen=from_text(row["last_seen"]),
                started_at=from_text(row["started_at"]),
            )
            for row in rows
        ]

    def newest_live_revision_time(self, now: datetime, lease: float) -> datetime | None:
        since = to_text(now - timedelta(seconds=lease))
        with self._connection.locked() as db:
            (newest,) = db.execute(
                "SELECT MAX(revision_time) FROM nodes WHERE last_seen >= ?", (since,)
            ).fetchone()
        return optional_time(newest)

    def forget_before(self, before: datetime) -> int:
        with self._connection.write() as db:
            cursor = db.execute("DELETE FROM nodes WHERE last_seen < ?", (to_text(before),))
        return cursor.rowcount
