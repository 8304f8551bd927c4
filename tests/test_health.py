"""Are a task's backups healthy: the 30-day strip and the last slot's verdict, from the task's
schedule (the scheduler's own fire times), its runs and `now`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from reconciler.cron import next_fire
from reconciler.health import (
    MISSED_AFTER,
    STRIP_DAYS,
    DayState,
    SlotVerdict,
    Timing,
    due_between,
    last_slot,
    strip,
)
from reconciler.models import Frequency, Schedule
from reconciler.types import RunStatus

ZONES = ["UTC", "Europe/London", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=400)


@dataclass(frozen=True)
class Run:
    started_at: datetime
    status: RunStatus


def daily(at: str = "02:30", zone: str = "UTC") -> Schedule:
    return Schedule(frequency=Frequency.DAILY, time=at, timezone=zone)


def tracked(schedule: Schedule, since: datetime = LONG_AGO, paused: bool = False) -> Timing:
    return Timing(schedule, paused, since)


schedules = st.one_of(
    st.builds(
        lambda hour, minute, zone: daily(f"{hour:02d}:{minute:02d}", zone),
        st.integers(0, 23),
        st.integers(0, 59),
        st.sampled_from(ZONES),
    ),
    st.builds(
        lambda hour, zone: Schedule(
            frequency=Frequency.WEEKLY, time=f"{hour:02d}:15", timezone=zone
        ),
        st.integers(0, 23),
        st.sampled_from(ZONES),
    ),
    st.builds(
        lambda cron, zone: Schedule(custom_cron=cron, timezone=zone),
        st.sampled_from(["0 */6 * * *", "30 1 1 * *", "45 23 * * 1-5", "0 0 29 2 *"]),
        st.sampled_from(ZONES),
    ),
)
instants = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)


@given(schedules, instants, st.integers(0, 60 * 24 * 40), st.integers(-3000, 3000), instants)
def test_a_window_is_due_exactly_when_a_slot_fired_in_it_after_tracking_and_grace(
    schedule: Schedule, start: datetime, minutes: int, since_offset: int, now: datetime
) -> None:
    end = start + timedelta(minutes=minutes)
    since = start + timedelta(minutes=since_offset)
    # The oracle: walk the schedule's fire times one by one.
    low, high = max(start, since), min(end, now - MISSED_AFTER + timedelta(microseconds=1))
    expected = False
    if low < high:
        expected = next_fire(schedule, low - timedelta(microseconds=1)) < high

    assert due_between(tracked(schedule, since), start, end, now) is expected


@given(schedules, instants, st.sampled_from(ZONES))
def test_the_strip_has_one_cell_per_local_day_ending_today(
    schedule: Schedule, now: datetime, zone: str
) -> None:
    cells = strip(tracked(schedule), [], now, zone)

    today = now.astimezone(ZoneInfo(zone)).date()
    assert [cell.day for cell in cells] == [
        today - timedelta(days=back) for back in range(STRIP_DAYS - 1, -1, -1)
    ]


@given(st.integers(0, 23), st.integers(0, 59), st.sampled_from(ZONES), instants)
def test_a_daily_task_that_never_ran_missed_every_day_whose_slot_has_passed(
    hour: int, minute: int, zone: str, now: datetime
) -> None:
    schedule = daily(f"{hour:02d}:{minute:02d}", zone)

    cells = strip(tracked(schedule, now - timedelta(days=60)), [], now, zone)

    today_slot = next_fire(schedule, now - timedelta(days=1, hours=2))
    while today_slot.astimezone(ZoneInfo(zone)).date() < now.astimezone(ZoneInfo(zone)).date():
        today_slot = next_fire(schedule, today_slot)
    assert all(cell.state is DayState.MISSED for cell in cells[:-1])
    passed = today_slot + MISSED_AFTER <= now
    assert cells[-1].state is (DayState.MISSED if passed else DayState.NOTHING_DUE)


@given(schedules, instants, st.sampled_from(ZONES))
def test_nothing_is_due_before_the_task_was_tracked_or_while_it_is_paused(
    schedule: Schedule, now: datetime, zone: str
) -> None:
    fresh = strip(tracked(schedule, now), [], now, zone)
    paused = strip(tracked(schedule, paused=True), [], now, zone)
    untracked = strip(Timing(schedule, False, None), [], now, zone)

    for cells in (fresh, paused, untracked):
        assert {cell.state for cell in cells} == {DayState.NOTHING_DUE}


@given(
    st.lists(
        st.tuples(
            st.integers(0, 29 * 24 * 60),
            st.sampled_from([RunStatus.SUCCESSFUL, RunStatus.FAILED, RunStatus.RUNNING]),
        ),
        min_size=1,
        max_size=12,
    ),
    st.sampled_from(ZONES),
)
def test_a_day_with_runs_shows_its_latest_finished_run_or_running(
    offsets: list[tuple[int, RunStatus]], zone: str
) -> None:
    runs = [Run(NOW - timedelta(minutes=minutes), status) for minutes, status in offsets]

    cells = {cell.day: cell.state for cell in strip(tracked(daily()), runs, NOW, zone)}

    tz = ZoneInfo(zone)
    for day in {run.started_at.astimezone(tz).date() for run in runs}:
        that_day = [run for run in runs if run.started_at.astimezone(tz).date() == day]
        finished = [run for run in that_day if run.status is not RunStatus.RUNNING]
        if finished:
            latest = max(finished, key=lambda run: run.started_at).status
            expected = DayState.SUCCESS if latest is RunStatus.SUCCESSFUL else DayState.FAILURE
        else:
            expected = DayState.RUNNING
        assert cells[day] is expected


def test_a_slot_with_no_run_since_it_is_missed() -> None:
    yesterday = NOW - timedelta(days=1)  # the 02:30 slot of today has no run after it

    assert last_slot(tracked(daily()), [Run(yesterday, RunStatus.SUCCESSFUL)], NOW) is (
        SlotVerdict.MISSED
    )


def test_the_latest_run_since_the_last_slot_decides_its_verdict() -> None:
    slot = datetime(2026, 3, 10, 2, 30, tzinfo=UTC)
    failed, retried = (
        Run(slot, RunStatus.FAILED),
        Run(slot + timedelta(hours=1), RunStatus.SUCCESSFUL),
    )

    assert last_slot(tracked(daily()), [failed], NOW) is SlotVerdict.FAILED
    assert last_slot(tracked(daily()), [failed, retried], NOW) is SlotVerdict.SUCCEEDED
    assert last_slot(tracked(daily()), [Run(slot, RunStatus.RUNNING)], NOW) is SlotVerdict.RUNNING


def test_a_slot_is_not_missed_until_the_grace_has_passed() -> None:
    slot = datetime(2026, 3, 10, 11, 58, tzinfo=UTC)
    ran_yesterday = [Run(slot - timedelta(days=1), RunStatus.SUCCESSFUL)]
    timing = tracked(daily("11:58"))

    assert last_slot(timing, ran_yesterday, slot + MISSED_AFTER - timedelta(seconds=1)) is (
        SlotVerdict.SUCCEEDED
    )
    assert last_slot(timing, ran_yesterday, slot + MISSED_AFTER) is SlotVerdict.MISSED


def test_a_paused_task_has_no_verdict() -> None:
    assert last_slot(tracked(daily(), paused=True), [], NOW) is None
