"""The file-time index in PostgreSQL: one row per path, and the revision the rows describe."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from reconciler.state.filetimes import IndexedFileTimes
from reconciler.state.postgres.connection import Db, PostgresConnection


def _put_file_times(db: Db, revision: str, rows: Mapping[str, IndexedFileTimes]) -> None:
    with db.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO file_times (path, created_at, updated_at, present)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (path) DO UPDATE SET"
            " created_at = excluded.created_at, updated_at = excluded.updated_at,"
            " present = excluded.present",
            [(path, row.created, row.updated, row.present) for path, row in rows.items()],
        )
    db.execute(
        "INSERT INTO file_times_revision (singleton, revision) VALUES (1, %s)"
        " ON CONFLICT (singleton) DO UPDATE SET revision = excluded.revision",
        (revision,),
    )


class PostgresStoredFileTimes:
    def __init__(self, connection: PostgresConnection) -> None:
        self._connection = connection

    def file_times_revision(self) -> str | None:
        with self._connection.autocommit() as db:
            row = db.execute("SELECT revision FROM file_times_revision").fetchone()
        return None if row is None else str(row["revision"])

    def indexed_file_times(
        self, paths: Iterable[str]
    ) -> tuple[str | None, dict[str, IndexedFileTimes]]:
        with self._connection.read() as db:
            row = db.execute("SELECT revision FROM file_times_revision").fetchone()
            rows = db.execute(
                "SELECT * FROM file_times WHERE path = ANY(%s)", (list(paths),)
            ).fetchall()
        revision = None if row is None else str(row["revision"])
        return revision, {
            row["path"]: IndexedFileTimes(row["created_at"], row["updated_at"], row["present"])
            for row in rows
        }

    def rebuild_file_times(self, revision: str, rows: Mapping[str, IndexedFileTimes]) -> None:
        with self._connection.write() as db:
            db.execute("DELETE FROM file_times")
            _put_file_times(db, revision, rows)

    def advance_file_times(
        self, since: str, revision: str, rows: Mapping[str, IndexedFileTimes]
    ) -> bool:
        with self._connection.write() as db:
            row = db.execute(
                "SELECT revision FROM file_times_revision WHERE singleton = 1 FOR UPDATE"
            ).fetchone()
            if row is None or row["revision"] != since:
                return False
            _put_file_times(db, revision, rows)
            return True
