"""Fire times of daily, weekly and custom_cron schedules, including across DST transitions."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from itertools import accumulate, pairwise
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from reconciler.cron import NoFireTime, next_fire, previous_fire
from reconciler.models import Frequency, Schedule, Weekday

DST_ZONES = [
    "Europe/London",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",  # 30 minute shift
    "America/Santiago",  # transitions at local midnight
    "Asia/Kolkata",  # no DST at all
]
MICROSECOND = timedelta(microseconds=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(
    zone: str, year: int, month: int, day: int, hour: int, minute: int, fold: int = 0
) -> datetime:
    """A local reading as a UTC instant (ambiguous aware times never equal other zones' times)."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone), fold=fold).astimezone(
        UTC
    )


def daily(at: str, zone: str = "UTC") -> Schedule:
    return Schedule(frequency=Frequency.DAILY, time=at, timezone=zone)


def weekly(at: str, zone: str = "UTC", weekday: Weekday | None = None) -> Schedule:
    return Schedule(frequency=Frequency.WEEKLY, time=at, timezone=zone, weekday=weekday)


def cron(expression: str, zone: str = "UTC") -> Schedule:
    return Schedule(custom_cron=expression, timezone=zone)


def fires(schedule: Schedule, after: datetime, until: datetime) -> list[datetime]:
    """Every fire time in (after, until], by chaining next_fire."""
    found = []
    moment = next_fire(schedule, after)
    while moment <= until:
        found.append(moment)
        moment = next_fire(schedule, moment)
    return found


# --- examples -------------------------------------------------------------------------------


def test_a_daily_schedule_fires_at_its_local_time_every_day() -> None:
    schedule = daily("23:15", "America/New_York")
    assert fires(schedule, utc(2024, 6, 1, 12), utc(2024, 6, 3, 12)) == [
        local("America/New_York", 2024, 6, 1, 23, 15),
        local("America/New_York", 2024, 6, 2, 23, 15),
    ]


def test_fire_times_are_returned_in_utc() -> None:
    fire = next_fire(daily("10:30", "Europe/Berlin"), utc(2024, 6, 1))
    assert fire.tzinfo is UTC
    assert fire == utc(2024, 6, 1, 8, 30)


def test_next_fire_is_strictly_after_the_given_instant() -> None:
    schedule = daily("10:30")
    assert next_fire(schedule, utc(2024, 6, 1, 10, 30)) == utc(2024, 6, 2, 10, 30)
    assert next_fire(schedule, utc(2024, 6, 1, 10, 30) - MICROSECOND) == utc(2024, 6, 1, 10, 30)


def test_the_given_instant_may_be_in_any_timezone() -> None:
    after = local("Asia/Tokyo", 2024, 6, 1, 19, 29)  # 10:29 UTC
    assert next_fire(daily("10:30"), after) == utc(2024, 6, 1, 10, 30)


def test_a_weekly_schedule_fires_on_its_weekday() -> None:
    schedule = weekly("06:00", "Europe/London", Weekday.WEDNESDAY)
    assert fires(schedule, utc(2024, 6, 1), utc(2024, 6, 20)) == [
        utc(2024, 6, 5, 5),
        utc(2024, 6, 12, 5),
        utc(2024, 6, 19, 5),
    ]


def test_a_weekly_schedule_without_a_weekday_runs_on_sunday() -> None:
    assert next_fire(weekly("06:00"), utc(2024, 6, 1)) == utc(2024, 6, 2, 6)


def test_previous_fire_is_the_latest_fire_at_or_before_the_instant() -> None:
    schedule = daily("10:30")
    assert previous_fire(schedule, utc(2024, 6, 2, 10, 30)) == utc(2024, 6, 2, 10, 30)
    assert previous_fire(schedule, utc(2024, 6, 2, 10, 29)) == utc(2024, 6, 1, 10, 30)


def test_a_custom_cron_fires_at_its_slots_in_its_timezone() -> None:
    schedule = cron("0 */6 * * *", "Europe/Berlin")
    assert fires(schedule, utc(2024, 6, 1, 0), utc(2024, 6, 1, 12)) == [
        utc(2024, 6, 1, 4),
        utc(2024, 6, 1, 10),
    ]
    assert previous_fire(schedule, utc(2024, 6, 1, 11)) == utc(2024, 6, 1, 10)


def test_a_naive_instant_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_fire(daily("10:30"), datetime(2024, 6, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        previous_fire(daily("10:30"), datetime(2024, 6, 1))


def test_a_cron_that_never_matches_a_date_has_no_fire_time() -> None:
    schedule = cron("0 0 30 2 *")
    with pytest.raises(NoFireTime, match="never matches"):
        next_fire(schedule, utc(2024, 1, 1))
    assert previous_fire(schedule, utc(2024, 1, 1)) is None


# --- the DST rule, by example ---------------------------------------------------------------


def test_a_local_time_in_the_spring_forward_gap_fires_at_the_end_of_the_gap() -> None:
    # New York, 2024-03-10: 02:00 EST jumps to 03:00 EDT, so 02:30 does not exist that day.
    schedule = daily("02:30", "America/New_York")
    assert fires(schedule, utc(2024, 3, 9), utc(2024, 3, 12)) == [
        local("America/New_York", 2024, 3, 9, 2, 30),
        local("America/New_York", 2024, 3, 10, 3, 0),
        local("America/New_York", 2024, 3, 11, 2, 30),
    ]


def test_an_ambiguous_local_time_fires_once_at_its_first_occurrence() -> None:
    # New York, 2024-11-03: 01:00-02:00 happens first in EDT, then again in EST.
    schedule = daily("01:30", "America/New_York")
    assert fires(schedule, utc(2024, 11, 2, 12), utc(2024, 11, 4, 12)) == [
        local("America/New_York", 2024, 11, 3, 1, 30, fold=0),
        local("America/New_York", 2024, 11, 4, 1, 30),
    ]


def test_the_thirty_minute_lord_howe_gap_fires_at_its_end() -> None:
    # Lord Howe, 2024-10-06: 02:00 (+10:30) jumps to 02:30 (+11).
    schedule = daily("02:15", "Australia/Lord_Howe")
    assert next_fire(schedule, utc(2024, 10, 5, 6)) == local(
        "Australia/Lord_Howe", 2024, 10, 6, 2, 30
    )


def test_the_second_pass_of_an_overlap_does_not_fire_again() -> None:
    second_pass = local("America/New_York", 2024, 11, 3, 1, 40, fold=1)
    assert next_fire(daily("01:30", "America/New_York"), second_pass) == local(
        "America/New_York", 2024, 11, 4, 1, 30
    )
    assert previous_fire(daily("01:50", "America/New_York"), second_pass) == local(
        "America/New_York", 2024, 11, 3, 1, 50, fold=0
    )


def test_croniter_alone_fires_an_ambiguous_time_twice() -> None:
    # Why custom_cron slots are mapped to instants by our rule rather than by croniter.
    slots = croniter("30 1 * * *", datetime(2024, 11, 2, 12, tzinfo=ZoneInfo("America/New_York")))
    first, second = (slots.get_next(datetime).astimezone(UTC) for _ in range(2))
    assert second - first == timedelta(hours=1)


def test_a_custom_cron_at_an_ambiguous_time_fires_once() -> None:
    schedule = cron("30 1 * * *", "America/New_York")
    assert fires(schedule, utc(2024, 11, 2, 12), utc(2024, 11, 4, 12)) == [
        local("America/New_York", 2024, 11, 3, 1, 30, fold=0),
        local("America/New_York", 2024, 11, 4, 1, 30),
    ]


def test_custom_cron_slots_inside_a_gap_collapse_into_one_fire() -> None:
    schedule = cron("*/20 * * * *", "America/New_York")
    assert fires(
        schedule, local("America/New_York", 2024, 3, 10, 1, 30), utc(2024, 3, 10, 7, 20)
    ) == [
        local("America/New_York", 2024, 3, 10, 1, 40),
        local("America/New_York", 2024, 3, 10, 3, 0),  # 02:00, 02:20, 02:40 and 03:00 itself
        local("America/New_York", 2024, 3, 10, 3, 20),
    ]


# --- properties -----------------------------------------------------------------------------

hours = st.one_of(st.sampled_from([0, 1, 2, 3, 23]), st.integers(0, 23))
minutes = st.one_of(st.sampled_from([0, 15, 30, 45, 59]), st.integers(0, 59))
clock_times = st.builds(lambda h, m: f"{h:02d}:{m:02d}", hours, minutes)
weekdays = st.sampled_from(list(Weekday))
years = st.integers(2000, 2037)
CRON_FOR_ISO = {day.iso: (day.iso + 1) % 7 for day in Weekday}  # cron counts Sunday = 0


@dataclass(frozen=True)
class Timeline:
    """Every whole minute of a few days around one offset change, with its local clock reading."""

    transition: datetime
    instants: list[datetime]
    highest_reading_so_far: list[datetime]

    def expected_fires(self, slots: list[datetime]) -> list[datetime]:
        """The rule by brute force: a naive local slot fires at the first minute whose local
        clock reading is that slot or later (transitions in these zones fall on whole minutes)."""
        positions = [bisect_left(self.highest_reading_so_far, slot) for slot in slots]
        assert all(position < len(self.instants) for position in positions)
        return sorted({self.instants[position] for position in positions})


@cache
def timelines(zone_name: str, year: int) -> list[Timeline]:
    """One Timeline (transition +- 2 days) per offset change of `zone_name` during `year`."""
    zone = ZoneInfo(zone_name)
    found = []
    moment = datetime(year, 1, 1, tzinfo=UTC)
    offset = moment.astimezone(zone).utcoffset()
    while moment.year == year:
        moment += timedelta(hours=1)
        if moment.astimezone(zone).utcoffset() == offset:
            continue
        offset = moment.astimezone(zone).utcoffset()
        instants = [moment - timedelta(days=2, minutes=-n) for n in range(4 * 24 * 60)]
        readings = (instant.astimezone(zone).replace(tzinfo=None) for instant in instants)
        found.append(Timeline(moment, instants, list(accumulate(readings, max))))
    return found


def slots_between(expression: str, first: date, last: date) -> list[datetime]:
    """Naive local slots of a cron expression on days first..last (croniter's plain calendar)."""
    found = []
    slots = croniter(expression, datetime.combine(first, datetime.min.time()) - MICROSECOND)
    while (slot := slots.get_next(datetime)).date() <= last:
        found.append(slot)
    return found


def as_cron(schedule: Schedule) -> str:
    if schedule.custom_cron is not None:
        return schedule.custom_cron
    assert schedule.time is not None
    hour, minute = int(schedule.time[:2]), int(schedule.time[3:])
    if schedule.weekday is None and schedule.frequency is Frequency.DAILY:
        return f"{minute} {hour} * * *"
    return f"{minute} {hour} * * {CRON_FOR_ISO[schedule.run_weekday.iso]}"


def assert_fires_follow_the_rule_around_transitions(schedule: Schedule, year: int) -> None:
    zone = ZoneInfo(schedule.timezone)
    for timeline in timelines(schedule.timezone, year):
        first_day = (timeline.transition - timedelta(days=1)).astimezone(zone).date()
        last_day = (timeline.transition + timedelta(days=1)).astimezone(zone).date()
        expected = timeline.expected_fires(slots_between(as_cron(schedule), first_day, last_day))
        # The whole local days, so a window without a slot (most of a weekly schedule's) still
        # proves that nothing fires in it.
        start, end = timeline.expected_fires(
            [datetime.combine(first_day, time(0, 0)), datetime.combine(last_day, time(23, 59))]
        )
        assert fires(schedule, start - MICROSECOND, end) == expected
        assert all(previous_fire(schedule, fire) == fire for fire in expected)


def whole_year(zone: str, year: int) -> tuple[datetime, datetime]:
    """(after, until) for `fires` covering every local day of `year`."""
    start = datetime(year, 1, 1, tzinfo=ZoneInfo(zone))
    return start - MICROSECOND, start.replace(year=year + 1) - MICROSECOND


@settings(max_examples=40, deadline=None)
@given(zone=st.sampled_from(DST_ZONES), at=clock_times, year=years)
def test_a_daily_schedule_fires_exactly_once_per_local_day_through_a_year(
    zone: str, at: str, year: int
) -> None:
    schedule = daily(at, zone)
    found = fires(schedule, *whole_year(zone, year))
    assert all(earlier < later for earlier, later in pairwise(found))
    days = [fire.astimezone(ZoneInfo(zone)).date() for fire in found]
    assert days == [date(year, 1, 1) + timedelta(days=n) for n in range(len(days))]
    assert days[-1] == date(year, 12, 31)


@settings(max_examples=40, deadline=None)
@given(zone=st.sampled_from(DST_ZONES), at=clock_times, weekday=weekdays, year=years)
def test_a_weekly_schedule_fires_exactly_once_per_week_through_a_year(
    zone: str, at: str, weekday: Weekday, year: int
) -> None:
    schedule = weekly(at, zone, weekday)
    found = fires(schedule, *whole_year(zone, year))
    days = [fire.astimezone(ZoneInfo(zone)).date() for fire in found]
    assert all(day.weekday() == weekday.iso for day in days)
    assert all(later - earlier == timedelta(days=7) for earlier, later in pairwise(days))
    assert days[0] - date(year, 1, 1) < timedelta(days=7)
    assert date(year, 12, 31) - days[-1] < timedelta(days=7)


@settings(max_examples=40, deadline=None)
@given(zone=st.sampled_from(DST_ZONES), at=clock_times, year=years)
def test_daily_fires_around_dst_transitions_follow_the_rule(zone: str, at: str, year: int) -> None:
    assert_fires_follow_the_rule_around_transitions(daily(at, zone), year)


@settings(max_examples=40, deadline=None)
@given(zone=st.sampled_from(DST_ZONES), at=clock_times, weekday=weekdays, year=years)
def test_weekly_fires_around_dst_transitions_follow_the_rule(
    zone: str, at: str, weekday: Weekday, year: int
) -> None:
    assert_fires_follow_the_rule_around_transitions(weekly(at, zone, weekday), year)


cron_expressions = st.one_of(
    st.sampled_from(["*/15 * * * *", "0,30 1-3 * * *", "0 0 * * *", "30 23 * * 6", "45 * * * *"]),
    st.builds(lambda m, h: f"{m} {h} * * *", minutes, hours),
    st.builds(lambda m, h: f"{m} */{h} * * *", minutes, st.integers(1, 6)),
)


@settings(max_examples=30, deadline=None)
@given(zone=st.sampled_from(DST_ZONES), expression=cron_expressions, year=years)
def test_custom_cron_fires_around_dst_transitions_follow_the_rule(
    zone: str, expression: str, year: int
) -> None:
    assert_fires_follow_the_rule_around_transitions(cron(expression, zone), year)


def offsets_stable(zone: ZoneInfo, start: datetime, end: datetime) -> bool:
    offsets = set()
    moment = start
    while moment <= end:
        offsets.add(moment.astimezone(zone).utcoffset())
        moment += timedelta(hours=6)
    return len(offsets) == 1


agreement_zones = st.sampled_from([*DST_ZONES, "UTC", "Asia/Tokyo", "America/Los_Angeles"])
instants = st.datetimes(datetime(2000, 1, 1), datetime(2037, 12, 1), timezones=st.just(UTC))


@settings(max_examples=200, deadline=None)
@given(
    zone=agreement_zones,
    at=clock_times,
    weekday=st.one_of(st.none(), weekdays),
    after=instants,
)
def test_direct_computation_agrees_with_croniter_away_from_dst(
    zone: str, at: str, weekday: Weekday | None, after: datetime
) -> None:
    tz = ZoneInfo(zone)
    assume(offsets_stable(tz, after - timedelta(days=9), after + timedelta(days=9)))
    schedule = daily(at, zone) if weekday is None else weekly(at, zone, weekday)
    expected = croniter(as_cron(schedule), after.astimezone(tz)).get_next(datetime)
    assert next_fire(schedule, after) == expected


@settings(max_examples=200, deadline=None)
@given(
    zone=agreement_zones,
    schedule_kind=st.sampled_from(["daily", "weekly", "cron"]),
    at=clock_times,
    expression=cron_expressions,
    after=instants,
)
def test_previous_and_next_fire_bracket_every_instant(
    zone: str, schedule_kind: str, at: str, expression: str, after: datetime
) -> None:
    schedule = {
        "daily": daily(at, zone),
        "weekly": weekly(at, zone),
        "cron": cron(expression, zone),
    }[schedule_kind]
    before, upcoming = previous_fire(schedule, after), next_fire(schedule, after)
    assert before is not None
    assert before <= after < upcoming
    assert next_fire(schedule, before) == upcoming
    assert previous_fire(schedule, upcoming - MICROSECOND) == before
