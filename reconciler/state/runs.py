"""Runs and their logs: the interface every state backend implements, and its records.

A run's log is stored in batches (one write's lines at a time), so a chatty remote costs one
write per batch, not per line; readers get a run's tail (`LogTail`) or the lines after the last
one they saw (`log_after`), never a whole log.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from reconciler.resticcommands import BackupSummary
from reconciler.state.errors import StateError
from reconciler.types import RunKind, RunStatus, TaskStatus

INTERRUPTED = "interrupted by a daemon restart"
NEVER_STARTED = "never started: the daemon restarted while the run was queued"


class RunInProgressError(StateError):
    """The task has a run in progress, possibly started by another process."""


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
    sha256: str | None = None  # of the stored backup, as written (hex)
    kind: RunKind = RunKind.BACKUP
    snapshot: BackupSummary | None = None  # restic's summary of the snapshot the run stored


SnapshotColumns = tuple[str | None, int | None, int | None]


def snapshot_columns(snapshot: BackupSummary | None) -> SnapshotColumns:
    """A run's restic_snapshot_id, restic_data_added and restic_total_bytes, as each backend
    stores them (all NULL for a run that stored no restic snapshot)."""
    if snapshot is None:
        return None, None, None
    return snapshot.snapshot_id, snapshot.data_added, snapshot.total_bytes_processed


def stored_snapshot(columns: SnapshotColumns) -> BackupSummary | None:
    """The summary that `snapshot_columns` stored."""
    snapshot_id, data_added, total_bytes = columns
    if snapshot_id is None or data_added is None or total_bytes is None:
        return None
    return BackupSummary(snapshot_id, data_added, total_bytes)


@dataclass(frozen=True, slots=True)
class LastSuccess:
    """A task's newest successful run: when it finished and how many bytes it stored."""

    finished_at: datetime
    size: int | None


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run without its log: what a status page shows of it."""

    id: int
    task_id: int
    status: RunStatus
    trigger: str
    started_at: datetime
    finished_at: datetime | None
    size: int | None
    kind: RunKind = RunKind.BACKUP


class Runs(Protocol):
    def start_run(
        self, task_id: int, trigger: str, now: datetime, kind: RunKind = RunKind.BACKUP
    ) -> int:
        """A new running run of `kind`; RunInProgressError if the task already has an unfinished
        (queued or running) one of any kind, in this process or another sharing the store."""
        ...

    def queue_run(
        self, task_id: int, trigger: str, now: datetime, kind: RunKind = RunKind.BACKUP
    ) -> int:
        """A new queued run (admitted, not started); RunInProgressError as for `start_run`."""
        ...

    def begin_run(self, run_id: int, now: datetime) -> None:
        """A queued run starts: it is running, and `now` is its start time; StateError when it
        is unknown or not queued."""
        ...

    def record_target(self, run_id: int, target: RunTarget) -> None:
        """Remember where the run is about to write; call before its temporary file exists."""
        ...

    def append_logs(self, run_id: int, entries: Sequence[tuple[datetime, str]]) -> None:
        """Add (time, line) entries to the run's log as one batch; StateError for no such run."""
        ...

    def log_after(self, run_id: int, after: int, limit: int = 1000) -> tuple[list[str], int]:
        """Up to `limit` of the run's log lines after the first `after`, and the new offset."""
        ...

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
        """End a queued or running run; StateError when it is unknown or already finished.
        `size` and `sha256` are those of the stored backup, `snapshot` restic's summary of it
        (a restic destination's backups only)."""
        ...

    def run(self, run_id: int, tail: LogTail = DEFAULT_TAIL) -> RunRecord | None: ...

    def latest_run(self, task_id: int, tail: LogTail = DEFAULT_TAIL) -> RunRecord | None: ...

    def page(
        self, task_id: int, offset: int, limit: int, tail: LogTail = DEFAULT_TAIL
    ) -> tuple[list[RunRecord], int]:
        """The task's runs newest first, `limit` of them from `offset`, and how many it has."""
        ...

    def recover_interrupted(self, now: datetime) -> list[RunRecord]:
        """Runs a crash left unfinished end failed, their logs saying so (`INTERRUPTED` for a
        running one, `NEVER_STARTED` for a queued one); returns them."""
        ...

    def prune_runs(self, task_id: int, keep: int, started_before: datetime | None) -> int:
        """Delete the task's finished runs beyond its `keep` newest (0: no such limit) and every
        finished run started before `started_before` (None: no such limit), with their logs.
        Returns how many runs were deleted."""
        ...

    def task_status(self, task_id: int) -> TaskStatus: ...

    def task_statuses(self, task_ids: Iterable[int]) -> dict[int, TaskStatus]: ...

    def last_run_at(
        self, task_ids: Iterable[int] | None = None, kind: RunKind = RunKind.BACKUP
    ) -> dict[int, datetime]:
        """When each task's latest run of `kind` started (every task's when `task_ids` is
        None)."""
        ...

    def statuses_before(
        self, task_id: int, run_id: int, limit: int, kind: RunKind = RunKind.BACKUP
    ) -> list[RunStatus]:
        """The statuses of the task's `limit` newest runs of `kind` older than run `run_id`,
        newest first (what a failure streak is counted from: drills and backups apart)."""
        ...

    def last_successes(
        self, task_ids: Iterable[int], kind: RunKind = RunKind.BACKUP
    ) -> dict[int, LastSuccess]:
        """Each task's newest successful run of `kind`; a task without one is left out."""

    def recent_runs(
        self, task_ids: Iterable[int], since: datetime, kind: RunKind = RunKind.BACKUP
    ) -> dict[int, list[RunSummary]]:
        """Each task's runs of `kind` started at `since` or later, and its latest one however
        old, oldest first, without their logs (a task without such runs is left out)."""
        ...
