"""Observed state in SQLite: runs and their logs, scheduler bookkeeping, API tokens, task ids.

Nothing here is configuration (that lives in git), so the file can be deleted and rebuilt; what is
lost is history, never intent. One connection shared by the asyncio thread and worker threads,
serialised by a lock; WAL lets other connections (a second process, a CLI) read while we write,
and every write commits at once so a reader sees a running backup's log as it grows.

A run's log is stored in batches (one row holds the lines one write brought, numbered from 0 per
run), so a chatty remote costs a row and a transaction per batch, not per line; readers get a
run's tail (`LogTail`) or the lines after the last one they saw (`log_after`), never a whole log.

The state file lives in a directory only the daemon's user can write to: the secrets store sits
beside it, and anyone who can replace either file can redirect backups or steal credentials.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import sqlite3
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reconciler.types import ReconcilerError, RunStatus, TaskStatus

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "rk_"  # noqa: S105 - a public marker that makes leaked tokens recognisable
_TASK_ID_COUNTER = "task_id"
INTERRUPTED = "interrupted by a daemon restart"
# A newline inside a log line is stored escaped, so one line is always one line of output.
_NEWLINE, _ESCAPED_NEWLINE = "\n", "\\n"
TOKEN_USE_RESOLUTION = timedelta(minutes=1)

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
)
SCHEMA_VERSION = len(_MIGRATIONS)


class RunInProgressError(ReconcilerError):
    """The task has a run in progress, possibly started by another process."""


class HistoryError(ReconcilerError):
    """The history database cannot be used as asked (unknown run, newer schema...)."""


@dataclass(frozen=True, slots=True)
class LogTail:
    """How much of a run's log a read returns: its last `lines` lines, at most `chars` long."""

    lines: int = 1000
    chars: int = 1 << 20


DEFAULT_TAIL = LogTail()


@dataclass(frozen=True, slots=True)
class RunTarget:
    """Where a run writes its backup: the destination (its JSON), the folder under it, the name."""

    destination: str
    directory: str
    name: str


@dataclass(frozen=True)
class RunRecord:
    id: int
    task_id: int
    status: RunStatus
    trigger: str
    started_at: datetime
    finished_at: datetime | None
    output: str
    reason: str | None
    size: int | None
    backup_name: str | None
    target: RunTarget | None = None


@dataclass(frozen=True)
class StoredResponse:
    """The first answer to a write sent with an Idempotency-Key."""

    fingerprint: str
    status: int
    body: str
    created_at: datetime


@dataclass(frozen=True)
class TokenRecord:
    id: int
    user_id: int
    name: str
    abilities: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    operator: bool = False


@dataclass(frozen=True)
class IndexedFileTimes:
    """One file's row in the file-time index."""

    created: datetime
    updated: datetime
    present: bool


def _to_text(moment: datetime) -> str:
    # A fixed-width UTC form, so text order is time order inside SQL.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"history needs timezone-aware datetimes, got naive {moment!r}")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _from_text(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _optional_time(text: str | None) -> datetime | None:
    return None if text is None else _from_text(text)


def _token_hash(plaintext: str) -> str:
    # Tokens carry 256 random bits, so a fast unsalted hash is enough: nothing to brute-force.
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def _log_line(at: datetime, line: str) -> str:
    return f"{_to_text(at)[:19]}Z {line.replace(_NEWLINE, _ESCAPED_NEWLINE)}"


def _bounded(lines: list[str], skipped: int, tail: LogTail) -> str:
    """`lines` as output, cut from the front to `tail`, saying how many lines it left out."""
    kept: list[str] = []
    size = 0
    for line in reversed(lines[-tail.lines :] if tail.lines else []):
        if size + len(line) + 1 > tail.chars:
            if not kept:  # one huge line: its end is what matters
                kept.append(line[len(line) - tail.chars + 1 :])
            break
        kept.append(line)
        size += len(line) + 1
    skipped += len(lines) - len(kept)
    note = [f"[{skipped:,} earlier lines not shown]"] if skipped else []
    return "".join(f"{line}\n" for line in note + kept[::-1])


def _check_directory(directory: Path) -> None:
    info = directory.stat()
    if info.st_uid != os.geteuid():
        raise HistoryError(
            f"state directory {directory}: owned by uid {info.st_uid}, not by the daemon's user"
            f" (uid {os.geteuid()}); give it to that user (chown) or choose another --state"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise HistoryError(
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


def _token(row: sqlite3.Row) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        abilities=tuple(json.loads(row["abilities"])),
        created_at=_from_text(row["created_at"]),
        last_used_at=_optional_time(row["last_used_at"]),
        operator=bool(row["operator"]),
    )


class History:
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
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            self.created = version == 0
            if version == SCHEMA_VERSION:
                return
            if not 0 <= version < SCHEMA_VERSION:
                raise HistoryError(
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
    def _write(self) -> Iterator[sqlite3.Connection]:
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
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot across several SELECTs."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    # Runs

    def start_run(self, task_id: int, trigger: str, now: datetime) -> int:
        """A new running run; RunInProgressError if the task already has one.

        One statement checks and inserts under SQLite's write lock, so the rule holds between
        processes too (the daemon and a `reconciler run` on the same state).
        """
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO runs (task_id, status, trigger, started_at) SELECT ?, ?, ?, ? "
                "WHERE NOT EXISTS (SELECT 1 FROM runs WHERE task_id = ? AND status = ?)",
                (task_id, RunStatus.RUNNING.value, trigger, _to_text(now), task_id,
                 RunStatus.RUNNING.value),
            )  # fmt: skip
            if cursor.rowcount == 0:
                raise RunInProgressError(f"task {task_id} is already running")
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def record_target(self, run_id: int, target: RunTarget) -> None:
        """Remember where the run is about to write; call before its temporary file exists."""
        with self._write() as db:
            db.execute(
                "UPDATE runs SET target_destination = ?, target_directory = ?, target_name = ?"
                " WHERE id = ?",
                (target.destination, target.directory, target.name, run_id),
            )

    def append_logs(self, run_id: int, entries: Sequence[tuple[datetime, str]]) -> None:
        """Add (time, line) entries to the run's log as one batch: one row, one transaction."""
        if not entries:
            return
        lines = json.dumps([_log_line(at, line) for at, line in entries])
        try:
            with self._write() as db:
                db.execute(
                    "INSERT INTO run_logs (run_id, first_line, line_count, lines)"
                    " VALUES (?, ?, ?, ?)",
                    (run_id, self._line_count(db, run_id), len(entries), lines),
                )
        except sqlite3.IntegrityError as exc:
            raise HistoryError(f"cannot log to run {run_id}: no such run") from exc

    @staticmethod
    def _line_count(db: sqlite3.Connection, run_id: int) -> int:
        row = db.execute(
            "SELECT first_line + line_count FROM run_logs WHERE run_id = ?"
            " ORDER BY first_line DESC LIMIT 1",
            (run_id,),
        ).fetchone()
        return 0 if row is None else int(row[0])

    @staticmethod
    def _lines_from(
        db: sqlite3.Connection, run_id: int, start: int, limit: int | None = None
    ) -> list[str]:
        """The run's lines from line `start` on (at most `limit`), reading only the batches that
        hold them."""
        first = db.execute(
            "SELECT first_line FROM run_logs WHERE run_id = ? AND first_line <= ?"
            " ORDER BY first_line DESC LIMIT 1",
            (run_id, start),
        ).fetchone()
        lines: list[str] = []
        for row in db.execute(
            "SELECT first_line, lines FROM run_logs WHERE run_id = ? AND first_line >= ?"
            " ORDER BY first_line",
            (run_id, 0 if first is None else first[0]),
        ):
            batch = json.loads(row["lines"])
            lines.extend(batch[max(start - row["first_line"], 0) :])
            if limit is not None and len(lines) >= limit:
                break
        return lines if limit is None else lines[:limit]

    def log_after(self, run_id: int, after: int, limit: int = 1000) -> tuple[list[str], int]:
        """Up to `limit` of the run's log lines after the first `after`, and the new offset."""
        if after < 0 or limit < 1:
            raise ValueError(f"after must not be negative and limit positive: {after}, {limit}")
        with self._read() as db:
            lines = self._lines_from(db, run_id, after, limit)
        return lines, after + len(lines)

    def finish_run(
        self,
        run_id: int,
        status: RunStatus,
        now: datetime,
        *,
        reason: str | None = None,
        size: int | None = None,
        backup_name: str | None = None,
    ) -> None:
        if status is RunStatus.RUNNING:
            raise ValueError(f"run {run_id} cannot finish with status {status.value!r}")
        with self._write() as db:
            cursor = db.execute(
                "UPDATE runs SET status = ?, finished_at = ?, reason = ?, size = ?,"
                " backup_name = ? WHERE id = ? AND status = ?",
                (
                    status.value,
                    _to_text(now),
                    reason,
                    size,
                    backup_name,
                    run_id,
                    RunStatus.RUNNING.value,
                ),
            )
            if cursor.rowcount == 0:
                row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
                state = "no such run" if row is None else f"it is already {row['status']}"
                raise HistoryError(f"cannot finish run {run_id}: {state}")

    def _output(self, db: sqlite3.Connection, run_id: int, tail: LogTail) -> str:
        start = max(self._line_count(db, run_id) - tail.lines, 0)
        return _bounded(self._lines_from(db, run_id, start), start, tail)

    def _records(
        self, db: sqlite3.Connection, rows: list[sqlite3.Row], tail: LogTail
    ) -> list[RunRecord]:
        return [
            RunRecord(
                id=row["id"],
                task_id=row["task_id"],
                status=RunStatus(row["status"]),
                trigger=row["trigger"],
                started_at=_from_text(row["started_at"]),
                finished_at=_optional_time(row["finished_at"]),
                output=self._output(db, row["id"], tail),
                reason=row["reason"],
                size=row["size"],
                backup_name=row["backup_name"],
                target=None
                if row["target_name"] is None
                else RunTarget(
                    row["target_destination"], row["target_directory"], row["target_name"]
                ),
            )
            for row in rows
        ]

    def run(self, run_id: int, tail: LogTail = DEFAULT_TAIL) -> RunRecord | None:
        with self._read() as db:
            rows = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchall()
            records = self._records(db, rows, tail)
        return records[0] if records else None

    def latest_run(self, task_id: int, tail: LogTail = DEFAULT_TAIL) -> RunRecord | None:
        with self._read() as db:
            rows = db.execute(
                "SELECT * FROM runs WHERE task_id = ? ORDER BY id DESC LIMIT 1",
                (task_id,),
            ).fetchall()
            records = self._records(db, rows, tail)
        return records[0] if records else None

    def runs(
        self, task_id: int, offset: int, limit: int, tail: LogTail = DEFAULT_TAIL
    ) -> tuple[list[RunRecord], int]:
        if offset < 0 or limit < 0:
            raise ValueError(f"offset and limit must not be negative, got {offset} and {limit}")
        with self._read() as db:
            total = db.execute("SELECT COUNT(*) FROM runs WHERE task_id = ?", (task_id,)).fetchone()
            rows = db.execute(
                "SELECT * FROM runs WHERE task_id = ? ORDER BY id DESC LIMIT ? OFFSET ?",
                (task_id, limit, offset),
            ).fetchall()
            return self._records(db, rows, tail), int(total[0])

    def recover_interrupted(self, now: datetime) -> list[RunRecord]:
        """Runs left `running` by a crash end failed, their logs saying so; returns them."""
        with self._write() as db:
            ids = [
                row["id"]
                for row in db.execute(
                    "SELECT id FROM runs WHERE status = ? ORDER BY id", (RunStatus.RUNNING.value,)
                )
            ]
            db.execute(
                "UPDATE runs SET status = ?, finished_at = ?, reason = ?"
                " WHERE id IN (SELECT value FROM json_each(?))",
                (RunStatus.FAILED.value, _to_text(now), INTERRUPTED, json.dumps(ids)),
            )
            line = json.dumps([_log_line(now, INTERRUPTED)])
            for run_id in ids:
                db.execute(
                    "INSERT INTO run_logs (run_id, first_line, line_count, lines)"
                    " VALUES (?, ?, 1, ?)",
                    (run_id, self._line_count(db, run_id), line),
                )
            rows = db.execute(
                "SELECT * FROM runs WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
                (json.dumps(ids),),
            ).fetchall()
            return self._records(db, rows, DEFAULT_TAIL)

    def prune_runs(self, task_id: int, keep: int, started_before: datetime | None) -> int:
        """Delete the task's finished runs beyond its `keep` newest (0: no such limit) and every
        finished run started before `started_before` (None: no such limit), with their logs.
        Returns how many runs were deleted."""
        running = RunStatus.RUNNING.value
        with self._write() as db:
            deleted = 0
            if keep > 0:
                deleted += db.execute(
                    "DELETE FROM runs WHERE task_id = ? AND status != ? AND id < (SELECT id FROM"
                    " runs WHERE task_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (task_id, running, task_id, keep - 1),
                ).rowcount
            if started_before is not None:
                deleted += db.execute(
                    "DELETE FROM runs WHERE started_at < ? AND status != ?",
                    (_to_text(started_before), running),
                ).rowcount
            return deleted

    def task_status(self, task_id: int) -> TaskStatus:
        return self.task_statuses([task_id])[task_id]

    def task_statuses(self, task_ids: Iterable[int]) -> dict[int, TaskStatus]:
        # Derived from the runs table, so it cannot drift from the runs themselves.
        wanted = list(task_ids)
        with self._lock:
            rows = self._db.execute(
                "SELECT DISTINCT task_id FROM runs WHERE status = ?"
                " AND task_id IN (SELECT value FROM json_each(?))",
                (RunStatus.RUNNING.value, json.dumps(wanted)),
            ).fetchall()
        running = {row["task_id"] for row in rows}
        return {
            task_id: TaskStatus.RUNNING if task_id in running else TaskStatus.READY
            for task_id in wanted
        }

    def last_run_at(self, task_ids: Iterable[int] | None = None) -> dict[int, datetime]:
        with self._lock:
            if task_ids is None:
                rows = self._db.execute(
                    "SELECT task_id, started_at FROM runs"
                    " WHERE id IN (SELECT MAX(id) FROM runs GROUP BY task_id)"
                ).fetchall()
            else:
                rows = self._db.execute(
                    "SELECT task_id, started_at FROM runs WHERE id IN (SELECT MAX(id) FROM runs"
                    " WHERE task_id IN (SELECT value FROM json_each(?)) GROUP BY task_id)",
                    (json.dumps(list(task_ids)),),
                ).fetchall()
        return {row["task_id"]: _from_text(row["started_at"]) for row in rows}

    # Scheduler bookkeeping

    def record_fire(self, task_id: int, slot: datetime) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO fires (task_id, slot) VALUES (?, ?)"
                " ON CONFLICT (task_id) DO UPDATE SET slot = excluded.slot",
                (task_id, _to_text(slot)),
            )

    def last_fired(self) -> dict[int, datetime]:
        with self._lock:
            rows = self._db.execute("SELECT task_id, slot FROM fires").fetchall()
        return {row["task_id"]: _from_text(row["slot"]) for row in rows}

    def mark_seen(self, task_ids: Iterable[int], now: datetime) -> None:
        at = _to_text(now)
        with self._write() as db:
            db.executemany(
                "INSERT OR IGNORE INTO seen (task_id, at) VALUES (?, ?)",
                ((task_id, at) for task_id in task_ids),
            )

    def first_seen(self) -> dict[int, datetime]:
        with self._lock:
            rows = self._db.execute("SELECT task_id, at FROM seen").fetchall()
        return {row["task_id"]: _from_text(row["at"]) for row in rows}

    # When a daemon was up

    def begin_alive(self, now: datetime, forget_before: datetime) -> int:
        """A daemon is up from `now` on; intervals that ended before `forget_before` are
        dropped. Returns the interval to extend with `still_alive`."""
        at = _to_text(now)
        with self._write() as db:
            db.execute("DELETE FROM alive WHERE until < ?", (_to_text(forget_before),))
            cursor = db.execute("INSERT INTO alive (since, until) VALUES (?, ?)", (at, at))
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def still_alive(self, interval: int, now: datetime) -> None:
        with self._write() as db:
            db.execute("UPDATE alive SET until = ? WHERE id = ?", (_to_text(now), interval))

    def alive_since(self, since: datetime) -> list[tuple[datetime, datetime]]:
        """(since, until) of every interval a daemon was up that ended at `since` or later."""
        with self._lock:
            rows = self._db.execute(
                "SELECT since, until FROM alive WHERE until >= ? ORDER BY since",
                (_to_text(since),),
            ).fetchall()
        return [(_from_text(row["since"]), _from_text(row["until"])) for row in rows]

    # API tokens

    def create_token(
        self,
        user_id: int,
        name: str,
        abilities: Sequence[str],
        now: datetime,
        *,
        operator: bool = False,
    ) -> tuple[TokenRecord, str]:
        """A new token and its plaintext, which is returned this once and never stored."""
        plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
        created = _to_text(now)
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO tokens (user_id, name, abilities, hash, created_at, operator)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    user_id,
                    name,
                    json.dumps(list(abilities)),
                    _token_hash(plaintext),
                    created,
                    int(operator),
                ),
            )
            assert cursor.lastrowid is not None
            token_id = cursor.lastrowid
        record = TokenRecord(
            id=token_id,
            user_id=user_id,
            name=name,
            abilities=tuple(abilities),
            created_at=_from_text(created),
            last_used_at=None,
            operator=operator,
        )
        return record, plaintext

    def authenticate(self, plaintext: str, now: datetime) -> TokenRecord | None:
        """The token, its use recorded to the minute: a token used again within a minute of its
        recorded use is checked with a read alone, so requests do not queue for SQLite's write
        lock."""
        # Looking up by hash keeps the comparison independent of how much of a guess is right.
        if not plaintext.startswith(TOKEN_PREFIX):
            return None
        digest = _token_hash(plaintext)
        with self._lock:
            row = self._db.execute("SELECT * FROM tokens WHERE hash = ?", (digest,)).fetchone()
        if row is None:
            return None
        token = _token(row)
        if token.last_used_at is not None and now - token.last_used_at < TOKEN_USE_RESOLUTION:
            return token
        with self._write() as db:
            row = db.execute(
                "UPDATE tokens SET last_used_at = ? WHERE hash = ? RETURNING *",
                (_to_text(now), digest),
            ).fetchone()
        return None if row is None else _token(row)

    def tokens(self, user_id: int | None = None) -> list[TokenRecord]:
        with self._lock:
            if user_id is None:
                rows = self._db.execute("SELECT * FROM tokens ORDER BY id")
            else:
                rows = self._db.execute(
                    "SELECT * FROM tokens WHERE user_id = ? ORDER BY id",
                    (user_id,),
                )
            return [_token(row) for row in rows.fetchall()]

    def revoke_token(self, token_id: int) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM tokens WHERE id = ?", (token_id,)).rowcount > 0

    # Idempotency keys

    def stored_response(self, user_id: int, key: str, since: datetime) -> StoredResponse | None:
        """The answer remembered for `key`, if it was given at `since` or later."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM idempotency_keys WHERE user_id = ? AND key = ? AND created_at >= ?",
                (user_id, key, _to_text(since)),
            ).fetchone()
        if row is None:
            return None
        return StoredResponse(
            row["fingerprint"], row["status"], row["body"], _from_text(row["created_at"])
        )

    def store_response(
        self,
        user_id: int,
        key: str,
        response: StoredResponse,
        *,
        forget_before: datetime,
    ) -> None:
        """Remember `response` for `key`, and forget every answer older than `forget_before`."""
        with self._write() as db:
            db.execute(
                "DELETE FROM idempotency_keys WHERE created_at < ?", (_to_text(forget_before),)
            )
            db.execute(
                "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, body,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, key) DO UPDATE SET"
                " fingerprint = excluded.fingerprint, status = excluded.status,"
                " body = excluded.body, created_at = excluded.created_at",
                (
                    user_id,
                    key,
                    response.fingerprint,
                    response.status,
                    response.body,
                    _to_text(response.created_at),
                ),
            )

    # The file-time index

    def file_times_revision(self) -> str | None:
        """The commit the file-time index describes; None while there is no index."""
        with self._lock:
            row = self._db.execute("SELECT revision FROM file_times_revision").fetchone()
        return None if row is None else str(row["revision"])

    def indexed_file_times(
        self, paths: Iterable[str]
    ) -> tuple[str | None, dict[str, IndexedFileTimes]]:
        """The index's revision and its rows for `paths`, from one snapshot."""
        with self._read() as db:
            row = db.execute("SELECT revision FROM file_times_revision").fetchone()
            rows = db.execute(
                "SELECT * FROM file_times WHERE path IN (SELECT value FROM json_each(?))",
                (json.dumps(list(paths)),),
            ).fetchall()
        revision = None if row is None else str(row["revision"])
        return revision, {
            row["path"]: IndexedFileTimes(
                _from_text(row["created_at"]), _from_text(row["updated_at"]), bool(row["present"])
            )
            for row in rows
        }

    def rebuild_file_times(self, revision: str, rows: Mapping[str, IndexedFileTimes]) -> None:
        """Replace the whole index with `rows`, describing `revision`."""
        with self._write() as db:
            db.execute("DELETE FROM file_times")
            self._put_file_times(db, revision, rows)

    def advance_file_times(
        self, since: str, revision: str, rows: Mapping[str, IndexedFileTimes]
    ) -> bool:
        """Move the index from `since` to `revision`, upserting `rows`; False (and nothing
        written) when the index no longer describes `since` (another process moved it)."""
        with self._write() as db:
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
                (path, _to_text(row.created), _to_text(row.updated), int(row.present))
                for path, row in rows.items()
            ),
        )
        db.execute(
            "INSERT INTO file_times_revision (only, revision) VALUES (1, ?)"
            " ON CONFLICT (only) DO UPDATE SET revision = excluded.revision",
            (revision,),
        )

    # Task ids

    def highest_task_id(self) -> int:
        """The highest task id the API ever committed here (0: none). Git history is the record
        of ids; this survives a history rewrite that drops the commits naming them."""
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM counters WHERE name = ?", (_TASK_ID_COUNTER,)
            ).fetchone()
        return 0 if row is None else int(row["value"])

    def record_task_id(self, task_id: int) -> None:
        """Remember that `task_id` was committed (after the commit: a failed write uses none)."""
        with self._write() as db:
            db.execute(
                "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name)"
                " DO UPDATE SET value = MAX(value, excluded.value)",
                (_TASK_ID_COUNTER, task_id),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
