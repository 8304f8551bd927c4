"""The node registry in PostgreSQL: one row per node id."""

from __future__ import annotations

from datetime import datetime, timedelta

from reconciler.state.nodes import NodeRecord
from reconciler.state.postgres.connection import PostgresConnection


class PostgresNodeRegistry:
    def __init__(self, connection: PostgresConnection) -> None:
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
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (node_id) DO UPDATE SET"
                " revision = excluded.revision, revision_time = excluded.revision_time,"
                " last_seen = excluded.last_seen, started_at = excluded.started_at",
                (node_id, revision, revision_time, now, started_at),
            )

    def nodes(self) -> list[NodeRecord]:
        with self._connection.autocommit() as db:
            rows = db.execute(
                "SELECT node_id, revision, revision_time, last_seen, started_at FROM nodes"
                " ORDER BY node_id"
            ).fetchall()
        return [
            NodeRecord(
                node_id=row["node_id"],
                revision=row["revision"],
                revision_time=row["revision_time"],
                last_seen=row["last_seen"],
                started_at=row["started_at"],
            )
            for row in rows
        ]

    def newest_live_revision_time(self, now: datetime, lease: float) -> datetime | None:
        with self._connection.autocommit() as db:
            row = db.execute(
                "SELECT MAX(revision_time) AS newest FROM nodes WHERE last_seen >= %s",
                (now - timedelta(seconds=lease),),
            ).fetchone()
        return None if row is None else row["newest"]

    def forget_before(self, before: datetime) -> int:
        with self._connection.write() as db:
            return db.execute("DELETE FROM nodes WHERE last_seen < %s", (before,)).rowcount
