"""Runs and their logs in PostgreSQL, in the same batches as SQLite (`reconciler.state.logtext`).

"At most one unfinished run per task" is the unique partial index runs_one_unfinished: an insert
that would break it does nothing, so the rule holds between every node sharing the database.
A log batch takes its line numbers under a per-run row lock (`FOR UPDATE` on the run), so two
writers to one run never number the same lines.

An unfinished run is matched by the literal `status IN ('queued', 'running')`, the partial
index's own predicate, and SQL is never built from strings here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime

from psycopg.rows import DictRow

from reconciler.resticcommands import BackupSummary
from reconciler.state.errors import StateError
from reconciler.state.logtext import bounded, log_line
from reconciler.state.postgres.connection import Db, PostgresConnection
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
from reconciler.types import RunKind, RunStatus, TaskStatus


def _record(db: Db, row: DictRow, tail: LogTail) -> RunRecord:
    target = None
    if row["target_name"] is not None:
        target = RunTarget(row["target_destination"], row["target_directory"], row["target_name"])
    return RunRecord(
        id=row["id"],
        task_id=row["task_id"],
        status=RunStatus(row["status"]),
        trigger=row["trigger"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        output=_output(db, row["id"], tail),
        reason=row["reason"],
        size=row["size"],
        backup_name=row["backup_name"],
        target=target,
        sha256=row["sha256"],
        kind=RunKind(row["kind"]),
        snapshot=stored_snapshot(
            (row["restic_snapshot_id"], row["restic_data_added"], row["restic_total_bytes"])
        ),
    )


def _line_count(db: Db, run_id: int) -> int:
    row = db.execute(
        "SELECT first_line + line_count AS next FROM run_logs WHERE run_id = %s"
        " ORDER BY first_line DESC LIMIT 1",
        (run_id,),
    ).fetchone()
    return 0 if row is None else int(row["next"])


def _lines_from(db: Db, run_id: int, start: int, limit: int | None = None) -> list[str]:
    first = db.execute(
        "SELECT first_line FROM run_logs WHERE run_id = %s AND first_line <= %s"
        " ORDER BY first_line DESC LIMIT 1",
        (run_id, start),
    ).fetchone()
    lines: list[str] = []
    for row in db.execute(
        "SELECT first_line, lines FROM run_logs WHERE run_id = %s AND first_line >= %s"
        " ORDER BY first_line",
        (run_id, 0 if first is None else first["first_line"]),
    ):
        batch = json.loads(row["lines"])
        lines.extend(batch[max(start - row["first_line"], 0) :])
        if limit is not None and len(lines) >= limit:
            break
    return lines if limit is None else lines[:limit]


def _output(db: Db, run_id: int, tail: LogTail) -> str:
    start = max(_line_count(db, run_id) - tail.lines, 0)
    return bounded(_lines_from(db, run_id, start), start, tail)


def _status(db: Db, run_id: int) -> str | None:
    row = db.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()
    return None if row is None else str(row["status"])


def _append(db: Db, run_id: int, lines: list[str]) -> None:
    if db.execute("SELECT 1 FROM runs WHERE id = %s FOR UPDATE", (run_id,)).fetchone() is None:
        raise StateError(f"cannot log to run {run_id}: no such run")
    db.execute(
        "INSERT INTO run_logs (run_id, first_line, line_count, lines) VALUES (%s, %s, %s, %s)",
        (run_id, _line_count(db, run_id), len(lines), json.dumps(lines)),
    )


class PostgresRuns:
    def __init__(self, connection: PostgresConnection) -> None:
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
        with self._connection.write() as db:
            row = db.execute(
                "INSERT INTO runs (task_id, status, trigger, started_at, kind)"
                " VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (task_id) WHERE status IN ('queued', 'running')"
                " DO NOTHING RETURNING id",
                (task_id, status.value, trigger, now, kind.value),
            ).fetchone()
        if row is None:
            raise RunInProgressError(f"task {task_id} is already running")
        return int(row["id"])

    def begin_run(self, run_id: int, now: datetime) -> None:
        with self._connection.write() as db:
            cursor = db.execute(
                "UPDATE runs SET status = %s, started_at = %s WHERE id = %s AND status = %s",
                (RunStatus.RUNNING.value, now, run_id, RunStatus.QUEUED.value),
            )
            if cursor.rowcount == 0:
                now_status = _status(db, run_id)
                state = "no such run" if now_status is None else f"it is {now_status}"
                raise StateError(f"cannot start run {run_id}: {state}")

    def record_target(self, run_id: int, target: RunTarget) -> None:
        with self._connection.write() as db:
            db.execute(
                "UPDATE runs SET target_destination = %s, target_directory = %s,"
                " target_name = %s WHERE id = %s",
                (target.destination, target.directory, target.name, run_id),
            )

    def append_logs(self, run_id: int, entries: Sequence[tuple[datetime, str]]) -> None:
        if not entries:
            return
        with self._connection.write() as db:
            _append(db, run_id, [log_line(at, line) for at, line in entries])

    def log_after(self, run_id: int, after: int, limit: int = 1000) -> tuple[list[str], int]:
        if after < 0 or limit < 1:
            raise ValueError(f"after must not be negative and limit positive: {after}, {limit}")
        with self._connection.read() as db:
            lines = _lines_from(db, run_id, after, limit)
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
                "UPDATE runs SET status = %s, finished_at = %s, reason = %s, size = %s,"
                " backup_name = %s, sha256 = %s, restic_snapshot_id = %s, restic_data_added = %s,"
                " restic_total_bytes = %s WHERE id = %s AND status IN ('queued', 'running')",
                (
                    status.value,
                    now,
                    reason,
                    size,
                    backup_name,
                    sha256,
                    *snapshot_columns(snapshot),
                    run_id,
                ),
            )
            if cursor.rowcount == 0:
                now_status = _status(db, run_id)
                state = "no such run" if now_status is None else f"it is already {now_status}"
                raise StateError(f"cannot finish run {run_id}: {state}")

    def run(self, run_id: int, tail: LogTail = DEFAULT_TAIL) -> RunRecord | None:
        with self._connection.read() as db:
            row = db.execute("SELECT * FROM runs WHERE id = %s", (run_id,)).fetchone()
            return None if row is None else _record(db, row, tail)

    def latest_run(self, task_id: int, tail: LogTail = DEFAULT_TAIL) -> RunRecord | None:
        with self._connection.read() as db:
            row = db.execute(
                "SELECT * FROM runs WHERE task_id = %s ORDER BY id DESC LIMIT 1", (task_id,)
            ).fetchone()
            return None if row is None else _record(db, row, tail)

    def page(
        self, task_id: int, offset: int, limit: int, tail: LogTail = DEFAULT_TAIL
    ) -> tuple[list[RunRecord], int]:
        if offset < 0 or limit < 0:
            raise ValueError(f"offset and limit must not be negative, got {offset} and {limit}")
        with self._connection.read() as db:
            total = db.execute(
                "SELECT COUNT(*) AS total FROM runs WHERE task_id = %s", (task_id,)
            ).fetchone()
            rows = db.execute(
                "SELECT * FROM runs WHERE task_id = %s ORDER BY id DESC LIMIT %s OFFSET %s",
                (task_id, limit, offset),
            ).fetchall()
            assert total is not None
            return [_record(db, row, tail) for row in rows], int(total["total"])

    def recover_interrupted(self, now: datetime) -> list[RunRecord]:
        with self._connection.write() as db:
            unfinished = db.execute(
                "SELECT id, status FROM runs WHERE status IN ('queued', 'running')"
                " ORDER BY id FOR UPDATE"
            ).fetchall()
            for row in unfinished:
                reason = INTERRUPTED if row["status"] == RunStatus.RUNNING.value else NEVER_STARTED
                db.execute(
                    "UPDATE runs SET status = %s, finished_at = %s, reason = %s WHERE id = %s",
                    (RunStatus.FAILED.value, now, reason, row["id"]),
                )
                _append(db, int(row["id"]), [log_line(now, reason)])
            rows = db.execute(
                "SELECT * FROM runs WHERE id = ANY(%s) ORDER BY id",
                ([row["id"] for row in unfinished],),
            ).fetchall()
            return [_record(db, row, DEFAULT_TAIL) for row in rows]

    def prune_runs(self, task_id: int, keep: int, started_before: datetime | None) -> int:
        with self._connection.write() as db:
            deleted = 0
            if keep > 0:
                deleted += db.execute(
                    "DELETE FROM runs WHERE task_id = %s AND NOT (status IN ('queued', 'running'))"
                    " AND id < (SELECT id FROM runs WHERE task_id = %s"
                    " ORDER BY id DESC LIMIT 1 OFFSET %s)",
                    (task_id, task_id, keep - 1),
                ).rowcount
            if started_before is not None:
                deleted += db.execute(
                    "DELETE FROM runs WHERE started_at < %s"
                    " AND NOT (status IN ('queued', 'running'))",
                    (started_before,),
                ).rowcount
            return deleted

    def task_status(self, task_id: int) -> TaskStatus:
        return self.task_statuses([task_id])[task_id]

    def task_statuses(self, task_ids: Iterable[int]) -> dict[int, TaskStatus]:
        wanted = list(task_ids)
        with self._connection.autocommit() as db:
            rows = db.execute(
                "SELECT task_id, status FROM runs WHERE status IN ('queued', 'running')"
                " AND task_id = ANY(%s)",
                (wanted,),
            ).fetchall()
        unfinished = {row["task_id"]: TaskStatus(row["status"]) for row in rows}
        return {task_id: unfinished.get(task_id, TaskStatus.READY) for task_id in wanted}

    def last_run_at(
        self, task_ids: Iterable[int] | None = None, kind: RunKind = RunKind.BACKUP
    ) -> dict[int, datetime]:
        with self._connection.autocommit() as db:
            if task_ids is None:
                rows = db.execute(
                    "SELECT task_id, started_at FROM runs WHERE id IN"
                    " (SELECT MAX(id) FROM runs WHERE kind = %s GROUP BY task_id)",
                    (kind.value,),
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT task_id, started_at FROM runs WHERE id IN (SELECT MAX(id) FROM runs"
                    " WHERE task_id = ANY(%s) AND kind = %s GROUP BY task_id)",
                    (list(task_ids), kind.value),
                ).fetchall()
        return {row["task_id"]: row["started_at"] for row in rows}

    def statuses_before(
        self, task_id: int, run_id: int, limit: int, kind: RunKind = RunKind.BACKUP
    ) -> list[RunStatus]:
        with self._connection.autocommit() as db:
            rows = db.execute(
                "SELECT status FROM runs WHERE task_id = %s AND id < %s AND kind = %s"
                " ORDER BY id DESC LIMIT %s",
                (task_id, run_id, kind.value, limit),
            ).fetchall()
        return [RunStatus(row["status"]) for row in rows]

    def last_successes(
        self, task_ids: Iterable[int], kind: RunKind = RunKind.BACKUP
    ) -> dict[int, LastSuccess]:
        with self._connection.autocommit() as db:
            rows = db.execute(
                "SELECT task_id, finished_at, size FROM runs WHERE id IN (SELECT MAX(id) FROM runs"
                " WHERE status = 'successful' AND task_id = ANY(%s) AND kind = %s"
                " GROUP BY task_id)",
                (list(task_ids), kind.value),
            ).fetchall()
        return {row["task_id"]: LastSuccess(row["finished_at"], row["size"]) for row in rows}

    def recent_runs(
        self, task_ids: Iterable[int], since: datetime, kind: RunKind = RunKind.BACKUP
    ) -> dict[int, list[RunSummary]]:
        wanted = list(task_ids)
        with self._connection.autocommit() as db:
            rows = db.execute(
                "SELECT id, task_id, status, trigger, started_at, finished_at, size, kind"
                " FROM runs WHERE task_id = ANY(%s) AND kind = %s AND (started_at >= %s OR id IN"
                " (SELECT MAX(id) FROM runs WHERE task_id = ANY(%s) AND kind = %s"
                " GROUP BY task_id)) ORDER BY id",
                (wanted, kind.value, since, wanted, kind.value),
            ).fetchall()
        runs: dict[int, list[RunSummary]] = {}
        for row in rows:
            runs.setdefault(row["task_id"], []).append(
                RunSummary(
                    id=row["id"],
                    task_id=row["task_id"],
                    status=RunStatus(row["status"]),
                    trigger=row["trigger"],
                    started_at=row["started_at"],
                    finished_at=row["finished_at"],
                    size=row["size"],
                    kind=RunKind(row["kind"]),
                )
            )
        return runs
