"""The scheduler's bookkeeping in SQLite: fired slots, first sightings, a daemon's up time."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from reconciler.state.sqlite.connection import SqliteConnection, from_text, to_text


class SqliteScheduleBookkeeping:
    def __init__(self, connection: SqliteConnection) -> None:
        self._connection = connection

    def record_fires(self, fires: Iterable[tuple[int, datetime]]) -> None:
        with self._connection.write() as db:
            db.executemany(
                "INSERT INTO fires (task_id, slot) VALUES (?, ?)"
                " ON CONFLICT (task_id) DO UPDATE SET slot = excluded.slot",
                [(task_id, to_text(slot)) for task_id, slot in fires],
            )

    def last_fired(self) -> dict[int, datetime]:
        with self._connection.locked() as db:
            rows = db.execute("SELECT task_id, slot FROM fires").fetchall()
        return {row["task_id"]: from_text(row["slot"]) for row in rows}

    def mark_seen(self, task_ids: Iterable[int], now: datetime) -> None:
        at = to_text(now)
        with self._connection.write() as db:
            db.executemany(
                "INSERT OR IGNORE INTO seen (task_id, at) VALUES (?, ?)",
                ((task_id, at) for task_id in task_ids),
            )

    def first_seen(self) -> dict[int, datetime]:
        with self._connection.locked() as db:
            rows = db.execute("SELECT task_id, at FROM seen").fetchall()
        return {row["task_id"]: from_text(row["at"]) for row in rows}

    def begin_alive(self, now: datetime, forget_before: datetime) -> int:
        """A daemon is up from `now` on; intervals that ended before `forget_before` are
        dropped. Returns the interval to extend with `still_alive`."""
        at = to_text(now)
        with self._connection.write() as db:
            db.execute("DELETE FROM alive WHERE until < ?", (to_text(forget_before),))
            cursor = db.execute("INSERT INTO alive (since, until) VALUES (?, ?)", (at, at))
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def still_alive(self, interval: int, now: datetime) -> None:
        with self._connection.write() as db:
            db.execute("UPDATE alive SET until = ? WHERE id = ?", (to_text(now), interval))

    def alive_since(self, since: datetime) -> list[tuple[datetime, datetime]]:
        """(since, until) of every interval a daemon was up that ended at `since` or later."""
        with self._connection.locked() as db:
            rows = db.execute(
                "SELECT since, until FROM alive WHERE until >= ? ORDER BY since",
                (to_text(since),),
            ).fetchall()
        return [(from_text(row["since"]), from_text(row["until"])) for row in rows]
