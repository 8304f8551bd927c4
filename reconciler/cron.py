"""When a schedule fires: pure functions of a `Schedule` and an instant.

A schedule names local wall-clock readings in `schedule.timezone`; this module turns them into
UTC instants. Daily and weekly schedules are computed directly with zoneinfo (a few microseconds,
and the daemon computes thousands at start-up); `custom_cron` is expanded by croniter.

DST rule, the same for every kind of schedule:

* A local time that does not exist (the spring-forward gap) fires once, at the first instant
  after the gap: at 02:30 on a day when clocks jump from 02:00 to 03:00, the task fires at the
  jump (03:00 local). Several cron slots inside one gap collapse into that one fire.
* A local time that occurs twice (the fall-back overlap) fires once, at its first occurrence
  (`fold=0`), never again an hour later.

Equivalently: a slot fires at the first instant at which the local clock reads that date and time
or later. So a daily schedule fires exactly once per local calendar day, a weekly one once per
week, and no slot is skipped or doubled. croniter on its own does not follow this rule (it fires
an ambiguous `30 1 * * *` twice in New York in November), which is why croniter only enumerates
naive wall-clock slots here and the mapping to instants is ours.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from reconciler.models import Frequency, Schedule

_DAY = timedelta(days=1)
_WEEK = timedelta(days=7)
_MINUTE = timedelta(minutes=1)
_SECOND = timedelta(seconds=1)


class NoFireTime(ValueError):
    """A custom_cron that croniter accepts but that names no real date (`0 0 30 2 *`)."""


def next_fire(schedule: Schedule, after: datetime) -> datetime:
    """The first fire time strictly after `after` (any aware datetime), as an aware UTC datetime.

    Raises `NoFireTime` for a cron expression that never matches a calendar date.
    """
    _require_aware(after, "after")
    zone = ZoneInfo(schedule.timezone)
    if schedule.custom_cron is not None:
        return _cron_next(schedule.custom_cron, zone, after)
    at, step, day = _daily_or_weekly(schedule)
    # Start a day early: a gap or overlap that spans midnight can move yesterday's slot past
    # today's midnight. Fire times never decrease from one day to the next, so the first one
    # after `after` is the answer.
    first = after.astimezone(zone).date() - _DAY
    if day is not None:
        first += timedelta(days=(day - first.weekday()) % 7)
    candidate = first
    while True:
        fire = _wall_to_instant(datetime.combine(candidate, at), zone)
        if fire > after:
            return fire
        candidate += step


def previous_fire(schedule: Schedule, at_or_before: datetime) -> datetime | None:
    """The latest fire time <= `at_or_before`, as an aware UTC datetime; None when there is none."""
    _require_aware(at_or_before, "at_or_before")
    zone = ZoneInfo(schedule.timezone)
    try:
        if schedule.custom_cron is not None:
            return _cron_previous(schedule.custom_cron, zone, at_or_before)
        at, step, day = _daily_or_weekly(schedule)
        last = at_or_before.astimezone(zone).date() + _DAY  # a day late, as next_fire is early
        if day is not None:
            last -= timedelta(days=(last.weekday() - day) % 7)
        candidate = last
        while True:
            fire = _wall_to_instant(datetime.combine(candidate, at), zone)
            if fire <= at_or_before:
                return fire
            candidate -= step
    except (NoFireTime, OverflowError):  # nothing before year 1, or a cron that never matches
        return None


def _daily_or_weekly(schedule: Schedule) -> tuple[time, timedelta, int | None]:
    """(local time of day, step between slots, weekday or None for every day)."""
    assert schedule.time is not None  # Schedule guarantees time without custom_cron
    at = time(int(schedule.time[:2]), int(schedule.time[3:5]))
    if schedule.frequency is Frequency.WEEKLY:
        return at, _WEEK, schedule.run_weekday.iso
    return at, _DAY, None


def _cron_next(expression: str, zone: ZoneInfo, after: datetime) -> datetime:
    # Slots are naive wall-clock readings; croniter treats naive datetimes as a plain calendar
    # without DST. A slot s fires after `after` only if s is later than the wall-clock reading
    # of `after` (the mapping below never decreases), so start there. The loop only repeats when
    # `after` lies in the second pass of an overlap, whose slots fired in the first pass.
    slots = croniter(expression, after.astimezone(zone).replace(tzinfo=None))
    while True:
        try:
            slot = slots.get_next(datetime)
        except CroniterBadDateError as exc:
            raise NoFireTime(f"custom_cron {expression!r} never matches a date") from exc
        fire = _wall_to_instant(slot, zone)
        if fire > after:
            return fire


def _cron_previous(expression: str, zone: ZoneInfo, at_or_before: datetime) -> datetime:
    local = at_or_before.astimezone(zone)
    # In the second pass of an overlap, slots up to the overlap's end already fired in the
    # first pass, so they count as earlier: look that much further ahead, then walk back.
    overlap = max(_offset(local.replace(fold=0)) - _offset(local), timedelta(0))
    start = local.replace(tzinfo=None, second=0, microsecond=0) + _MINUTE + overlap
    slots = croniter(expression, start)
    while True:
        try:
            slot = slots.get_prev(datetime)
        except CroniterBadDateError as exc:
            raise NoFireTime(f"custom_cron {expression!r} never matches a date") from exc
        fire = _wall_to_instant(slot, zone)
        if fire <= at_or_before:
            return fire


def _wall_to_instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant at which a naive local reading fires, by the module's DST rule."""
    first = wall.replace(tzinfo=zone)
    before = _offset(first)
    after = _offset(first.replace(fold=1))
    # fold=0 takes the offset in force before a transition and fold=1 the one after, so they
    # differ only around transitions: a larger offset after means clocks jumped forward over
    # `wall` (a gap); a smaller one means `wall` occurs twice and fold=0 is the first pass.
    if before >= after:
        return (wall - before).replace(tzinfo=UTC)
    return _transition(wall - after, wall - before, zone, before)


def _transition(low: datetime, high: datetime, zone: ZoneInfo, before: timedelta) -> datetime:
    """The instant in (low, high] (naive UTC) where the offset stops being `before`.

    Bisection on whole seconds (tz transitions are whole seconds); only runs for a slot that
    falls into a gap, so at most a couple of times a year per schedule.
    """
    while high - low > _SECOND:
        middle = low + timedelta(seconds=int((high - low).total_seconds()) // 2)
        if _offset(middle.replace(tzinfo=UTC).astimezone(zone)) == before:
            low = middle
        else:
            high = middle
    return high.replace(tzinfo=UTC)


def _offset(moment: datetime) -> timedelta:
    offset = moment.utcoffset()
    assert offset is not None  # only called on datetimes carrying a ZoneInfo
    return offset


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {moment!r}")
