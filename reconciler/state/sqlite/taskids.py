"""The highest task id the API committed, in SQLite's counters table."""

from __future__ import annotations

from reconciler.state.sqlite.connection import SqliteConnection

_TASK_ID_COUNTER = "task_id"


class SqliteTaskIdCounter:
    def __init__(self, connection: SqliteConnection) -> None:
        self._connection = connection

    def highest_task_id(self) -> int:
        """The highest task id the API ever committed here (0: none). Git history is the record
        of ids; this survives a history rewrite that drops the commits naming them."""
        with self._connection.locked() as db:
            row = db.execute(
                "SELECT value FROM counters WHERE name = ?", (_TASK_ID_COUNTER,)
            ).fetchone()
        return 0 if row is None else int(row["value"])

    def record_task_id(self, task_id: int) -> None:
        """Remember that `task_id` was committed (after the commit: a failed write uses none)."""
        with self._connection.write() as db:
            db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name)"
                " DO UPDATE SET value = MAX(value, excluded.value)",
                (_TASK_ID_COUNTER, task_id),
            )
