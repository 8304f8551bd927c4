"""The scheduler's bookkeeping in PostgreSQL: fired slots, first sightings, a daemon's up time."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from reconciler.state.postgres.connection import PostgresConnection


class PostgresScheduleBookkeeping:
    def __init__(self, connection: PostgresConnection) -> None:
        self._connection = connection

    def record_fires(self, fires: Iterable[tuple[int, datetime]]) -> None:
        with self._connection.write() as db, db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO fires (task_id, slot) VALUES (%s, %s)"
                " ON CONFLICT (task_id) DO UPDATE SET slot = excluded.slot",
                list(fires),
            )

    def last_fired(self) -> dict[int, datetime]:
        with self._connection.autocommit() as db:
            rows = db.execute("SELECT task_id, slot FROM fires").fetchall()
        return {row["task_id"]: row["slot"] for row in rows}

    def mark_seen(self, task_ids: Iterable[int], now: datetime) -> None:
        with self._connection.write() as db, db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO seen (task_id, at) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [(task_id, now) for task_id in task_ids],
            )

    def first_seen(self) -> dict[int, datetime]:
        with self._connection.autocommit() as db:
            rows = db.execute("SELECT task_id, at FROM seen").fetchall()
        return {row["task_id"]: row["at"] for row in rows}

    def begin_alive(self, now: datetime, forget_before: datetime) -> int:
        with self._connection.write() as db:
            db.execute("DELETE FROM alive WHERE until < %s", (forget_before,))
            row = db.execute(
                "INSERT INTO alive (since, until) VALUES (%s, %s) RETURNING id", (now, now)
            ).fetchone()
        assert row is not None
        return int(row["id"])

    def still_alive(self, interval: int, now: datetime) -> None:
        with self._connection.write() as db:
            db.execute("UPDATE alive SET until = %s WHERE id = %s", (now, interval))

    def alive_since(self, since: datetime) -> list[tuple[datetime, datetime]]:
        with self._connection.autocommit() as db:
            rows = db.execute(
                "SELECT since, until FROM alive WHERE until >= %s ORDER BY since", (since,)
            ).fetchall()
        return [(row["since"], row["until"]) for row in rows]
