"""The file-time index in SQLite: one row per path, and the revision the rows describe."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping

from reconciler.state.filetimes import IndexedFileTimes
from reconciler.state.sqlite.connection import SqliteConnection, from_text, to_text


class SqliteStoredFileTimes:
    def __init__(self, connection: SqliteConnection) -> None:
        self._connection = connection

    def file_times_revision(self) -> str | None:
        """The commit the file-time index describes; None while there is no index."""
        with self._connection.locked() as db:
            row = db.execute("SELECT revision FROM file_times_revision").fetchone()
        return None if row is None else str(row["revision"])

    def indexed_file_times(
        self, paths: Iterable[str]
    ) -> tuple[str | None, dict[str, IndexedFileTimes]]:
        """The index's revision and its rows for `paths`, from one snapshot."""
        with self._connection.read() as db:
            row = db.execute("SELECT revision FROM file_times_revision").fetchone()
            rows = db.execute(
                "SELECT * FROM file_times WHERE path IN (SELECT value FROM json_each(?))",
                (json.dumps(list(paths)),),
            ).fetchall()
        revision = None if row is None else str(row["revision"])
        return revision, {
            row["path"]: IndexedFileTimes(
                from_text(row["created_at"]), from_text(row["updated_at"]), bool(row["present"])
            )
            for row in rows
        }

    def rebuild_file_times(self, revision: str, rows: Mapping[str, IndexedFileTimes]) -> None:
        """Replace the whole index with `rows`, describing `revision`."""
        with self._connection.write() as db:
            db.execute("DELETE FROM file_times")
            self._put_file_times(db, revision, rows)

    def advance_file_times(
        self, since: str, revision: str, rows: Mapping[str, IndexedFileTimes]
    ) -> bool:
        """Move the index from `since` to `revision`, upserting `rows`; False (and nothing
        written) when the index no longer describes `since` (another process moved it)."""
        with self._connection.write() as db:
            row = db.execute("SELECT revision FROM file_times_revision").fetchone()
            if row is None or row["revision"] != since:
                return False
            self._put_file_times(db, revision, rows)
            return True

    def _put_file_times(
        self, db: sqlite3.Connection, revision: str, rows: Mapping[str, IndexedFileTimes]
    ) -> None:
        db.executemany(
            "INSERT INTO file_times (path, created_at, updated_at, present) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (path) DO UPDATE SET created_at = excluded.created_at,"
            " updated_at = excluded.updated_at, present = excluded.present",
            (
                (path, to_text(row.created), to_text(row.updated), int(row.present))
                for path, row in rows.items()
            ),
        )
        db.execute(
            "INSERT INTO file_times_revision (only, revision) VALUES (1, ?)"
            " ON CONFLICT (only) DO UPDATE SET revision = excluded.revision",
            (revision,),
        )
