"""Are a task's backups healthy? Pure verdicts from its schedule, its runs and `now`.

Two answers, both computed from the task's schedule with `cron` (the scheduler's own rule for
when a slot fires):

* a strip of days (`strip`): per local day, success or failure (that day's latest finished run
  decides), running (only unfinished runs that day), missed (no run that day although a slot was
  due) or nothing due;
* the last slot's verdict (`last_slot`): the latest slot that is due, judged by the runs that
  started at or after it.

A slot is due only once `MISSED_AFTER` has passed since it (the run it fires is recorded at
once, but the scheduler may wake a little late), and only from when the daemon started
tracking the task (`tracked_since`: a slot before the task existed was never missed). A paused
task has no due slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Protocol
from zoneinfo import ZoneInfo

from reconciler.cron import NoFireTime, next_fire, previous_fire
from reconciler.models import Schedule
from reconciler.types import RunStatus

MISSED_AFTER = timedelta(minutes=5)
STRIP_DAYS = 30
_INSTANT = timedelta(microseconds=1)


class DayState(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"
    RUNNING = "running"
    MISSED = "missed"
    NOTHING_DUE = "nothing-due"


class SlotVerdict(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RUNNING = "running"
    MISSED = "missed"


class PastRun(Protocol):
    """What a verdict needs of a run (`state.runs.RunSummary` is one)."""

    @property
    def started_at(self) -> datetime: ...

    @property
    def status(self) -> RunStatus: ...


@dataclass(frozen=True, slots=True)
class Day:
    day: date
    state: DayState


@dataclass(frozen=True, slots=True)
class Timing:
    """A task's schedule as far as health goes: when slots fire, whether they fire at all, and
    since when the daemon has tracked the task (None: not yet)."""

    schedule: Schedule
    paused: bool
    tracked_since: datetime | None


def due_between(timing: Timing, start: datetime, end: datetime, now: datetime) -> bool:
    """Whether a slot in [start, end) was due by `now`."""
    if timing.paused or timing.tracked_since is None:
        return False
    start = max(start, timing.tracked_since)
    end = min(end, now - MISSED_AFTER + _INSTANT)
    if start >= end:
        return False
    try:
        return next_fire(timing.schedule, start - _INSTANT) < end
    except NoFireTime:
        return False


def last_due_slot(timing: Timing, now: datetime) -> datetime | None:
    """The latest slot due by `now` since the task was tracked; None when there is none."""
    if timing.paused or timing.tracked_since is None:
        return None
    slot = previous_fire(timing.schedule, now - MISSED_AFTER)
    if slot is None or slot < timing.tracked_since:
        return None
    return slot


def last_slot(timing: Timing, runs: Sequence[PastRun], now: datetime) -> SlotVerdict | None:
    """The verdict on the latest due slot: the latest run started at or after it decides
    (a manual run after the slot counts too); None when no slot is due."""
    slot = last_due_slot(timing, now)
    if slot is None:
        return None
    after = [run for run in runs if slot <= run.started_at <= now]
    if not after:
        return SlotVerdict.MISSED
    latest = max(after, key=lambda run: run.started_at)
    if latest.status is RunStatus.SUCCESSFUL:
        return SlotVerdict.SUCCEEDED
    if latest.status is RunStatus.FAILED:
        return SlotVerdict.FAILED
    return SlotVerdict.RUNNING


def strip(
    timing: Timing, runs: Sequence[PastRun], now: datetime, zone: str, days: int = STRIP_DAYS
) -> list[Day]:
    """One cell per local day in `zone`, the `days` days ending today, oldest first."""
    tz = ZoneInfo(zone)
    today = now.astimezone(tz).date()
    by_day: dict[date, list[PastRun]] = {}
    for run in runs:
        if run.started_at <= now:
            by_day.setdefault(run.started_at.astimezone(tz).date(), []).append(run)
    cells = []
    for back in range(days - 1, -1, -1):
        day = today - timedelta(days=back)
        start = datetime.combine(day, time(0), tzinfo=tz)
        end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
        cells.append(Day(day, _day_state(timing, by_day.get(day, []), start, end, now)))
    return cells


def _day_state(
    timing: Timing, runs: Sequence[PastRun], start: datetime, end: datetime, now: datetime
) -> DayState:
    finished = [run for run in runs if run.status in (RunStatus.SUCCESSFUL, RunStatus.FAILED)]
    if finished:
        latest = max(finished, key=lambda run: run.started_at)
        return DayState.SUCCESS if latest.status is RunStatus.SUCCESSFUL else DayState.FAILURE
    if runs:
        return DayState.RUNNING
    return DayState.MISSED if due_between(timing, start, end, now) else DayState.NOTHING_DUE
