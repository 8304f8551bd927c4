"""What the status page shows, decided from the applied state, the runs and `now`: no I/O.

The template only lays out these values; every text in them is escaped when rendered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from reconciler import health
from reconciler.api.present import local_text, utc_text
from reconciler.models import ResolvedTask
from reconciler.state.runs import RunSummary
from reconciler.types import ConfigError, RunStatus
from reconciler.upstream import RemoteStatus

# A red mark: the task's last due slot was missed or its run failed.
NEEDS_ATTENTION = frozenset({health.SlotVerdict.MISSED, health.SlotVerdict.FAILED})


@dataclass(frozen=True, slots=True)
class LastRun:
    status: str
    at: str
    size: str
    duration: str


@dataclass(frozen=True, slots=True)
class TaskRow:
    id: int
    label: str
    attention: bool
    verdict: str  # on the last due slot, in words
    last_run: LastRun | None
    next_run: str
    days: Sequence[health.Day]


@dataclass(frozen=True, slots=True)
class ErrorRow:
    where: str  # `path:line`, or the path for a problem with the whole file
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class StatusView:
    user: str
    zone: str
    tasks: Sequence[TaskRow]
    errors: Sequence[ErrorRow]
    revision: str | None
    reconciled_at: str | None
    # The state of the remote the daemon follows, as `label: value` lines; None: no remote.
    remote: Mapping[str, str] | None = None

    @property
    def attention(self) -> int:
        return sum(row.attention for row in self.tasks)


def strip_start(now: datetime, days: int = health.STRIP_DAYS) -> datetime:
    """From when runs are needed for the strip (a day early: local days in any zone)."""
    return now - timedelta(days=days + 1)


def runs_needed_since(timings: Sequence[health.Timing], now: datetime) -> datetime:
    """The oldest start time any row needs: the strip's, or a last due slot older than it."""
    oldest = strip_start(now)
    for timing in timings:
        slot = health.last_due_slot(timing, now)
        if slot is not None:
            oldest = min(oldest, slot)
    return oldest


def task_row(
    resolved: ResolvedTask,
    timing: health.Timing,
    runs: Sequence[RunSummary],
    next_fire: datetime | None,
    zone: str,
    now: datetime,
) -> TaskRow:
    verdict = health.last_slot(timing, runs, now)
    latest = max(runs, key=lambda run: run.started_at) if runs else None
    return TaskRow(
        id=resolved.id,
        label=resolved.task.label,
        attention=_needs_attention(verdict, latest),
        verdict=_verdict_text(verdict, timing, latest),
        last_run=None if latest is None else _last_run(latest, zone, now),
        next_run="paused"
        if timing.paused
        else ("none" if next_fire is None else local_text(next_fire, zone)[:16]),
        days=health.strip(timing, runs, now, zone),
    )


def error_row(error: ConfigError) -> ErrorRow:
    where = error.path if error.line is None else f"{error.path}:{error.line}"
    return ErrorRow(where, error.field or "(file)", error.message)


def revision_time(reconciled_at: datetime | None) -> str | None:
    return None if reconciled_at is None else utc_text(reconciled_at)


def remote_lines(status: RemoteStatus) -> dict[str, str]:
    """The followed remote as the page shows it: where (no credentials), the last fetch and
    what came of it, and how many sets of our commits no longer applied."""
    return {
        "Remote": f"{status.url} ({status.branch})",
        "Last fetch": revision_time(status.last_fetch_at) or "not yet",
        "Last good fetch": revision_time(status.last_success_at) or "none yet",
        "Last error": status.last_error or "none",
        "Commits kept aside": str(len(status.set_aside)),
    }


def size_text(size: int | None) -> str:
    """`1.2 MB` (powers of 1000, as the daemon's log shows sizes), `-` when unknown."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable: the loop returns at TB")


def duration_text(seconds: float) -> str:
    """`0.4 s`, `3 min 4 s`, `2 h 5 min`."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def _last_run(run: RunSummary, zone: str, now: datetime) -> LastRun:
    end = run.finished_at if run.finished_at is not None else now
    return LastRun(
        status=run.status.value,
        at=local_text(run.started_at, zone)[:16],
        size=size_text(run.size) if run.status is RunStatus.SUCCESSFUL else "-",
        duration=duration_text(max((end - run.started_at).total_seconds(), 0.0)),
    )


def _needs_attention(verdict: health.SlotVerdict | None, latest: RunSummary | None) -> bool:
    """The last due slot was missed or failed; with no slot due yet (a new or paused task),
    the latest run failed."""
    if verdict is None:
        return latest is not None and latest.status is RunStatus.FAILED
    return verdict in NEEDS_ATTENTION


def _verdict_text(
    verdict: health.SlotVerdict | None, timing: health.Timing, latest: RunSummary | None
) -> str:
    if verdict is None:
        if latest is not None and latest.status is RunStatus.FAILED:
            return "last run failed"
        return "paused" if timing.paused else "no slot due yet"
    return {
        health.SlotVerdict.SUCCEEDED: "last slot succeeded",
        health.SlotVerdict.FAILED: "last slot failed",
        health.SlotVerdict.RUNNING: "last slot running",
        health.SlotVerdict.MISSED: "last slot missed",
    }[verdict]
