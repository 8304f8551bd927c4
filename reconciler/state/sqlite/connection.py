"""The SQLite state store's connection: its lock, its transactions, its file and its migrations.

One connection shared by the asyncio thread and worker threads, serialised by a lock; WAL lets
other connections (a second process, a CLI) read while we write, and every write commits at once
so a reader sees a running backup's log as it grows.

The state file lives in a directory only the daemon's user can write to: the secrets store sits
beside it, and anyone who can replace either file can redirect backups or steal credentials.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from reconciler.state.errors import StateError

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    trigger TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    reason TEXT,
    size INTEGER,
    backup_name TEXT
);
CREATE INDEX runs_by_task ON runs (task_id, id);
CREATE INDEX runs_running ON runs (status) WHERE status = 'running';
CREATE TABLE run_logs (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    at TEXT NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX run_logs_by_run ON run_logs (run_id, id);
CREATE TABLE fires (task_id INTEGER PRIMARY KEY, slot TEXT NOT NULL);
CREATE TABLE seen (task_id INTEGER PRIMARY KEY, at TEXT NOT NULL);
CREATE TABLE tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    abilities TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    last_used_at TEXT
);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# Where a run writes its backup, recorded before the first byte, so that recovery after a crash
# removes the temporary file from where it really is, whatever the config says by then.
_RUN_TARGETS = """
ALTER TABLE runs ADD COLUMN target_destination TEXT;
ALTER TABLE runs ADD COLUMN target_directory TEXT;
ALTER TABLE runs ADD COLUMN target_name TEXT;
CREATE INDEX runs_by_start ON runs (started_at)
"""

# Log lines in batches: `lines` is a JSON array of rendered lines, the run's lines
# first_line .. first_line + line_count - 1. A newline inside a line is stored as the two
# characters backslash and n, so a line is always one line of output.
_RUN_LOG_BATCHES = """
ALTER TABLE run_logs RENAME TO run_log_lines;
CREATE TABLE run_logs (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    first_line INTEGER NOT NULL,
    line_count INTEGER NOT NULL,
    lines TEXT NOT NULL
);
INSERT INTO run_logs (run_id, first_line, line_count, lines)
    SELECT run_id, ROW_NUMBER() OVER (PARTITION BY run_id ORDER BY id) - 1, 1,
        json_array(substr(at, 1, 19) || 'Z ' || replace(line, char(10), '\\n'))
    FROM run_log_lines ORDER BY id;
DROP TABLE run_log_lines;
CREATE UNIQUE INDEX run_logs_by_run ON run_logs (run_id, first_line)
"""

# When a daemon was up: one row per start, its `until` moved on by a heartbeat. Catch-up at start
# counts a slot as missed only if no daemon was up at that time.
_ALIVE = """
CREATE TABLE alive (id INTEGER PRIMARY KEY, since TEXT NOT NULL, until TEXT NOT NULL);
CREATE INDEX alive_by_end ON alive (until)
"""

_IDEMPOTENCY_KEYS = """
CREATE TABLE idempotency_keys (
    user_id INTEGER NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
"""

# Each entry takes the schema from its index to the next; a store is migrated step by step, so
# a new step is appended here and never edits an earlier one.
_MIGRATIONS: tuple[str, ...] = (
    _SCHEMA,
    _RUN_TARGETS,
    _RUN_LOG_BATCHES,
    _ALIVE,
    _IDEMPOTENCY_KEYS,
    # Operator tokens see the whole config set's state, files that belong to no user included.
    "ALTER TABLE tokens ADD COLUMN operator INTEGER NOT NULL DEFAULT 0",
    # The file-time index (observed from git, rebuilt from it when missing); `present`: the path
    # is in the indexed revision (rows of deleted paths keep their creation time, as git log does).
    """
    CREATE TABLE file_times (
        path TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        present INTEGER NOT NULL
    );
    CREATE TABLE file_times_revision (
        only INTEGER PRIMARY KEY CHECK (only = 1),
        revision TEXT NOT NULL
    );
    """,
    # A run is admitted `queued` and runs later: both are unfinished, and a task has at most one
    # unfinished run (the check that every start_run/queue_run makes uses this index).
    """
    DROP INDEX runs_running;
    CREATE INDEX runs_unfinished ON runs (task_id) WHERE status IN ('queued', 'running');
    """,
    # The SHA-256 of the stored backup (its size is `size`), checked by `reconciler verify`.
    "ALTER TABLE runs ADD COLUMN sha256 TEXT",
    # What a run does (`RunKind`): every run before restore drills took a backup.
    "ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'backup'",
    # Several daemons share the file: a claim per (task, slot, attempt) and a row per node
    # (`reconciler.state.claims`, `reconciler.state.nodes`).
    """
    CREATE TABLE claims (
        task_id INTEGER NOT NULL,
        slot TEXT NOT NULL,
        attempt INTEGER NOT NULL CHECK (attempt IN (0, 1)),
        server TEXT NOT NULL,
        node_id TEXT NOT NULL,
        claimed_at TEXT NOT NULL,
        lease_until TEXT NOT NULL,
        released INTEGER NOT NULL,
        taken_over_by TEXT,
        run_id INTEGER,
        PRIMARY KEY (task_id, slot, attempt)
    );
    CREATE INDEX claims_unended ON claims (server) WHERE released = 0 AND taken_over_by IS NULL;
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        revision TEXT,
        revision_time TEXT,
        last_seen TEXT NOT NULL,
        started_at TEXT NOT NULL
    );
    """,
    # restic's summary of the snapshot a run stored (`BackupSummary`); NULL for other runs.
    """
    ALTER TABLE runs ADD COLUMN restic_snapshot_id TEXT;
    ALTER TABLE runs ADD COLUMN restic_data_added INTEGER;
    ALTER TABLE runs ADD COLUMN restic_total_bytes INTEGER;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


def to_text(moment: datetime) -> str:
    # A fixed-width UTC form, so text order is time order inside SQL.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"history needs timezone-aware datetimes, got naive {moment!r}")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_text(text: str) -> datetime:
    # What `to_text` wrote; fromisoformat reads it (UTC included) hundreds of times faster than
    # strptime, and every API request reads its token's times.
    return datetime.fromisoformat(text)


def optional_time(text: str | None) -> datetime | None:
    return None if text is None else from_text(text)


def _check_directory(directory: Path) -> None:
    info = directory.stat()
    if info.st_uid != os.geteuid():
        raise StateError(
            f"state directory {directory}: owned by uid {info.st_uid}, not by the daemon's user"
            f" (uid {os.geteuid()}); give it to that user (chown) or choose another --state"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise StateError(
            f"state directory {directory}: other users can write to it (mode {mode:04o}), so they"
            " could replace the state store or the secrets beside it;"
            f" run chmod go-w {directory}"
        )


def _prepare_state_file(path: Path) -> None:
    """Make `path` a private file (0600) in a directory only we can write."""
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _check_directory(directory)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        return
    except FileExistsError:
        pass
    for existing in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = stat.S_IMODE(existing.lstat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            existing.chmod(0o600)
            logger.warning(
                "%s was readable by other users (mode %04o): made it 0600", existing, mode
            )


class SqliteConnection:
    """The one connection to a state file, opened, secured and migrated; every record kind's
    SQL runs through `write`, `read` or `locked`."""

    def __init__(self, path: Path | str) -> None:
        # SQLite creates its -wal and -shm files with the main file's mode: 0600 for all three.
        _prepare_state_file(Path(path))
        self.created = False
        """Whether this opened a new, empty store (none was there, or it was deleted)."""
        self._lock = threading.Lock()
        # isolation_level=None: we open transactions ourselves, so single statements commit at once.
        self._db = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode stays consistent after a crash; at worst the last writes are lost.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate(path)
        except BaseException:
            self._db.close()
            raise

    def _migrate(self, path: Path | str) -> None:
        with self.write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            self.created = version == 0
            if version == SCHEMA_VERSION:
                return
            if not 0 <= version < SCHEMA_VERSION:
                raise StateError(
                    f"{path}: history schema version {version} is newer than this version of"
                    f" reconciler knows ({SCHEMA_VERSION}); it holds only observed state, so it"
                    " can be moved aside and rebuilt"
                )
            for migration in _MIGRATIONS[version:]:
                for statement in migration.split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, taking the write lock up front (no upgrade deadlock)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot across several SELECTs."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    @contextmanager
    def locked(self) -> Iterator[sqlite3.Connection]:
        """The connection to itself, for one statement (a read, or a write that commits alone)."""
        with self._lock:
            yield self._db

    def close(self) -> None:
        with self._lock:
            self._db.close()
