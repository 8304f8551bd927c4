"""The highest task id the API committed, in PostgreSQL's counters table."""

from __future__ import annotations

from reconciler.state.postgres.connection import PostgresConnection

_TASK_ID_COUNTER = "task_id"


class PostgresTaskIdCounter:
    def __init__(self, connection: PostgresConnection) -> None:
        self._connection = connection

    def highest_task_id(self) -> int:
        with self._connection.autocommit() as db:
            row = db.execute(
                "SELECT value FROM counters WHERE name = %s", (_TASK_ID_COUNTER,)
            ).fetchone()
        return 0 if row is None else int(row["value"])

    def record_task_id(self, task_id: int) -> None:
        with self._connection.write() as db:
            db.execute(
                "INSERT INTO counters (name, value) VALUES (%s, %s) ON CONFLICT (name)"
                " DO UPDATE SET value = GREATEST(counters.value, excluded.value)",
                (_TASK_ID_COUNTER, task_id),
            )
