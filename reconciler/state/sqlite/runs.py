"""Runs and their logs in SQLite.

A run's log is stored in batches (one row holds the lines one write brought, numbered from 0 per
run), so a chatty remote costs a row and a transaction per batch, not per line.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime

from reconciler.resticcommands import BackupSummary
from reconciler.state.errors import StateError
from reconciler.state.logtext import bounded, log_line
from reconciler.state.runs import (
    DEFAULT_TAIL,
    INTERRUPTED,
    NEVER_STARTED,
    LastSuccess,
    LogTail,
    RunInProgressError,
    RunRecord,
    RunSummary,
    RunTarget,
    snapshot_columns,
    stored_snapshot,
)
from reconciler.state.sqlite.connection import (
    SqliteConnection,
    from_text,
    optional_time,
    to_text,
)
from reconciler.types import RunKind, RunStatus, TaskStatus

# An unfinished run (queued or running) is matched by the literal `status IN ('queued',
# 'running')`, never by bound values, so that SQLite uses the partial index runs_unfinished.


class SqliteRuns:
    def __init__(self, connection: SqliteConnection) -> None:
        self._connection = connection

    def start_run(
        self, task_id: int, trigger: str, now: datetime, kind: RunKind = RunKind.BACKUP
    ) -> int:
        return self._insert(task_id, RunStatus.RUNNING, trigger, now, kind)

    def queue_run(
        self, task_id: int, trigger: str, now: datetime, kind: RunKind = RunKind.BACKUP
    ) -> int:
        return self._insert(task_id, RunStatus.QUEUED, trigger, now, kind)

    def _insert(
        self, task_id: int, status: RunStatus, trigger: str, now: datetime, kind: RunKind
    ) -> int:
        """A new run; RunInProgressError if the task already has an unfinished one.

        One statement checks and inserts under SQLite's write lock, so the rule holds between
        processes too (the daemon and a `reconciler run` on the same state).
        """
        with self._connection.write() as db:
            cursor = db.execute(
                "INSERT INTO runs (task_id, status, trigger, started_at, kind)"
                " SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM runs WHERE task_id = ?"
                " AND status IN ('queued', 'running'))",
                (task_id, status.value, trigger, to_text(now), kind.value, task_id),
            )
            if cursor.rowcount == 0:
                raise RunInProgressError(f"task {task_id} is already running")
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def begin_run(self, run_id: int, now: datetime) -> None:
        with self._connection.write() as db:
            cursor = db.execute(
                "UPDATE runs SET status = ?, started_at = ? WHERE id = ? AND status = ?",
                (RunStatus.RUNNING.value, to_text(now), run_id, RunStatus.QUEUED.value),
            )
            if cursor.rowcount == 0:
                now_status = self._status(db, run_id)
                state = "no such run" if now_status is None else f"it is {now_status}"
                raise StateError(f"cannot start run {run_id}: {state}")

    @staticmethod
    def _status(db: sqlite3.Connection, run_id: int) -> str | None:
        row = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else str(row["status"])

    def record_target(self, run_id: int, target: RunTarget) -> None:
        """Remember where the run is about to write; call before its temporary file exists."""
        with self._connection.write() as db:
            db.execute(
                "UPDATE runs SET target_destination = ?, target_directory = ?, target_name = ?"
                " WHERE id = ?",
                (target.destination, target.directory, target.name, run_id),
            )

    def append_logs(self, run_id: int, entries: Sequence[tuple[datetime, str]]) -> None:
        """Add (time, line) entries to the run's log as one batch: one row, one transaction."""
        if not entries:
            return
        lines = json.dumps([log_line(at, line) for at, line in entries])
        try:
            with self._connection.write() as db:
                db.execute(
                    "INSERT INTO run_logs (run_id, first_line, line_count, lines)"
                    " VALUES (?, ?, ?, ?)",
                    (run_id, self._line_count(db, run_id), len(entries), lines),
                )
        except sqlite3.IntegrityError as exc:
            raise StateError(f"cannot log to run {run_id}: no such run") from exc

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
        with self._connection.read() as db:
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
        sha256: str | None = None,
        snapshot: BackupSummary | None = None,
    ) -> None:
        if status in (RunStatus.QUEUED, RunStatus.RUNNING):
            raise ValueError(f"run {run_id} cannot finish with status {status.value!r}")
        with self._connection.write() as db:
            cursor = db.execute(
                "UPDATE runs SET status = ?, finished_at = ?, reason = ?, size = ?,"
                " backup_name = ?, sha256 = ?, restic_snapshot_id = ?, restic_data_added = ?,"
                " restic_total_bytes = ? WHERE id = ? AND status IN ('queued', 'running')",
                (
                    status.value,
                    to_text(now),
                    reason,
                    size,
                    backup_name,
                    sha256,
                    *snapshot_columns(snapshot),
                    run_id,
                ),
            )
            if cursor.rowcount == 0:
                now_status = self._status(db, run_id)
                state = "no such run" if now_status is None else f"it is already {now_status}"
                raise StateError(f"cannot finish run {run_id}: {state}")

    def _output(self, db: sqlite3.Connection, run_id: int, tail: LogTail) -> str:
        start = max(self._line_count(db, run_id) - tail.lines, 0)
        return bounded(self._lines_from(db, run_id, start), start, tail)

    def _records(
        self, db: sqlite3.Connection, rows: list[sqlite3.Row], tail: LogTail
    ) -> list[RunRecord]:
        return [
            RunRecord(
                id=row["id"],
                task_id=row["task_id"],
                status=RunStatus(row["status"]),
                trigger=row["trigger"],
                started_at=from_text(row["started_at"]),
                finished_at=optional_time(row["finished_at"]),
                output=self._output(db, row["id"], tail),
                reason=row["reason"],
                size=row["size"],
                backup_name=row["backup_name"],
                target=None
                if row["target_name"] is None
                else RunTarget(
                    row["target_destination"], row["target_directory"], row["target_name"]
                ),
                sha256=row["sha256"],
                kind=RunKind(row["kind"]),
                snapshot=stored_snapshot(
                    (row["restic_snapshot_id"], row["restic_data_added"], row["restic_total_bytes"])
                ),
            )
            for row in rows
        ]

    def run(self, run_id: int, tail: LogTail = DEFAULT_TAIL) -> RunRecord | None:
        with self._connection.read() as db:
            rows = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchall()
            records = self._records(db, rows, tail)
        return records[0] if records else None

    def latest_run(self, task_id: int, tail: LogTail = DEFAULT_TAIL) -> RunRecord | None:
        with self._connection.read() as db:
            rows = db.execute(
                "SELECT * FROM runs WHERE task_id = ? ORDER BY id DESC LIMIT 1",
                (task_id,),
            ).fetchall()
            records = self._records(db, rows, tail)
        return records[0] if records else None

    def page(
        self, task_id: int, offset: int, limit: int, tail: LogTail = DEFAULT_TAIL
    ) -> tuple[list[RunRecord], int]:
        if offset < 0 or limit < 0:
            raise ValueError(f"offset and limit must not be negative, got {offset} and {limit}")
        with self._connection.read() as db:
            total = db.execute("SELECT COUNT(*) FROM runs WHERE task_id = ?", (task_id,)).fetchone()
            rows = db.execute(
                "SELECT * FROM runs WHERE task_id = ? ORDER BY id DESC LIMIT ? OFFSET ?",
                (task_id, limit, offset),
            ).fetchall()
            return self._records(db, rows, tail), int(total[0])

    def recover_interrupted(self, now: datetime) -> list[RunRecord]:
        """Runs a crash left unfinished end failed, their logs saying so; returns them."""
        with self._connection.write() as db:
            unfinished = db.execute(
                "SELECT id, status FROM runs WHERE status IN ('queued', 'running') ORDER BY id"
            ).fetchall()
            for row in unfinished:
                reason = INTERRUPTED if row["status"] == RunStatus.RUNNING.value else NEVER_STARTED
                db.execute(
                    "UPDATE runs SET status = ?, finished_at = ?, reason = ? WHERE id = ?",
                    (RunStatus.FAILED.value, to_text(now), reason, row["id"]),
                )
                db.execute(
                    "INSERT INTO run_logs (run_id, first_line, line_count, lines)"
                    " VALUES (?, ?, 1, ?)",
                    (
                        row["id"],
                        self._line_count(db, row["id"]),
                        json.dumps([log_line(now, reason)]),
                    ),
                )
            ids = json.dumps([row["id"] for row in unfinished])
            rows = db.execute(
                "SELECT * FROM runs WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
                (ids,),
            ).fetchall()
            return self._records(db, rows, DEFAULT_TAIL)

    def prune_runs(self, task_id: int, keep: int, started_before: datetime | None) -> int:
        """Delete the task's finished runs beyond its `keep` newest (0: no such limit) and every
        finished run started before `started_before` (None: no such limit), with their logs.
        Returns how many runs were deleted."""
        with self._connection.write() as db:
            deleted = 0
            if keep > 0:
                deleted += db.execute(
                    "DELETE FROM runs WHERE task_id = ? AND status NOT IN ('queued', 'running')"
                    " AND id < (SELECT id FROM runs WHERE task_id = ?"
                    " ORDER BY id DESC LIMIT 1 OFFSET ?)",
                    (task_id, task_id, keep - 1),
                ).rowcount
            if started_before is not None:
                deleted += db.execute(
                    "DELETE FROM runs WHERE started_at < ? AND status NOT IN ('queued', 'running')",
                    (to_text(started_before),),
                ).rowcount
            return deleted

    def task_status(self, task_id: int) -> TaskStatus:
        return self.task_statuses([task_id])[task_id]

    def task_statuses(self, task_ids: Iterable[int]) -> dict[int, TaskStatus]:
        # Derived from the runs table, so it cannot drift from the runs themselves.
        wanted = list(task_ids)
        with self._connection.locked() as db:
            rows = db.execute(
                "SELECT task_id, status FROM runs WHERE status IN ('queued', 'running')"
                " AND task_id IN (SELECT value FROM json_each(?))",
                (json.dumps(wanted),),
            ).fetchall()
        unfinished = {row["task_id"]: TaskStatus(row["status"]) for row in rows}
        return {task_id: unfinished.get(task_id, TaskStatus.READY) for task_id in wanted}

    def last_run_at(
        self, task_ids: Iterable[int] | None = None, kind: RunKind = RunKind.BACKUP
    ) -> dict[int, datetime]:
        with self._connection.locked() as db:
            if task_ids is None:
                rows = db.execute(
                    "SELECT task_id, started_at FROM runs WHERE id IN"
                    " (SELECT MAX(id) FROM runs WHERE kind = ? GROUP BY task_id)",
                    (kind.value,),
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT task_id, started_at FROM runs WHERE id IN (SELECT MAX(id) FROM runs"
                    " WHERE task_id IN (SELECT value FROM json_each(?)) AND kind = ?"
                    " GROUP BY task_id)",
                    (json.dumps(list(task_ids)), kind.value),
                ).fetchall()
        return {row["task_id"]: from_text(row["started_at"]) for row in rows}

    def statuses_before(
        self, task_id: int, run_id: int, limit: int, kind: RunKind = RunKind.BACKUP
    ) -> list[RunStatus]:
        with self._connection.locked() as db:
            rows = db.execute(
                "SELECT status FROM runs WHERE task_id = ? AND id < ? AND kind = ?"
                " ORDER BY id DESC LIMIT ?",
                (task_id, run_id, kind.value, limit),
            ).fetchall()
        return [RunStatus(row["status"]) for row in rows]

    def last_successes(
        self, task_ids: Iterable[int], kind: RunKind = RunKind.BACKUP
    ) -> dict[int, LastSuccess]:
        with self._connection.locked() as db:
            rows = db.execute(
                "SELECT task_id, finished_at, size FROM runs WHERE id IN (SELECT MAX(id) FROM runs"
                " WHERE status = 'successful' AND task_id IN (SELECT value FROM json_each(?))"
                " AND kind = ? GROUP BY task_id)",
                (json.dumps(list(task_ids)), kind.value),
            ).fetchall()
        return {
            row["task_id"]: LastSuccess(from_text(row["finished_at"]), row["size"]) for row in rows
        }

    def recent_runs(
        self, task_ids: Iterable[int], since: datetime, kind: RunKind = RunKind.BACKUP
    ) -> dict[int, list[RunSummary]]:
        wanted = json.dumps(list(task_ids))
        with self._connection.locked() as db:
            rows = db.execute(
                "SELECT id, task_id, status, trigger, started_at, finished_at, size, kind FROM runs"
                " WHERE task_id IN (SELECT value FROM json_each(?)) AND kind = ?"
                " AND (started_at >= ? OR id IN (SELECT MAX(id) FROM runs"
                " WHERE task_id IN (SELECT value FROM json_each(?)) AND kind = ?"
                " GROUP BY task_id))"
                " ORDER BY id",
                (wanted, kind.value, to_text(since), wanted, kind.value),
            ).fetchall()
        runs: dict[int, list[RunSummary]] = {}
        for row in rows:
            runs.setdefault(row["task_id"], []).append(
                RunSummary(
                    id=row["id"],
                    task_id=row["task_id"],
                    status=RunStatus(row["status"]),
                    trigger=row["trigger"],
                    started_at=from_text(row["started_at"]),
                    finished_at=optional_time(row["finished_at"]),
                    size=row["size"],
                    kind=RunKind(row["kind"]),
                )
            )
        return runs
