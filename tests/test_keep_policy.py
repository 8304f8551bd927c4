"""The calendar retention policy (`storage.keep`): restic's forget rules over a task's backups."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.models import Duration, Keep, Storage, parse_duration
from reconciler.retention import Decision, Policy, backup_name, decide, policy_for

UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")


def named(*moments: datetime, task_id: int = 7) -> list[str]:
    return [backup_name(task_id, None, moment, "tar.zst") for moment in moments]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def verdicts(decisions: list[Decision]) -> dict[str, tuple[str, ...]]:
    """Each kept backup's reasons; removed ones are left out."""
    return {decision.name: decision.reasons for decision in decisions if decision.keep}


def test_daily_keeps_the_newest_backup_of_each_of_the_newest_days() -> None:
    names = named(
        at("2026-11-28T03:00"),
        at("2026-11-29T03:00"),
        at("2026-11-29T15:00"),
        at("2026-11-30T03:00"),
    )
    decisions = decide(names, 7, None, Policy(daily=2), UTC_ZONE)
    assert verdicts(decisions) == {
        names[3]: ("daily 2026-11-30",),
        names[2]: ("daily 2026-11-29",),
    }
    assert [decision.name for decision in decisions] == names[::-1], "newest first"


def test_a_removed_backup_has_no_reasons() -> None:
    names = named(at("2026-11-29T03:00"), at("2026-11-30T03:00"))
    oldest = decide(names, 7, None, Policy(last=1), UTC_ZONE)[-1]
    assert (oldest.name, oldest.keep, oldest.reasons) == (names[0], False, ())


def test_weekly_buckets_are_iso_weeks() -> None:
    sunday, monday = at("2026-11-29T12:00"), at("2026-11-30T12:00")
    names = named(at("2026-11-28T12:00"), sunday, monday)
    assert verdicts(decide(names, 7, None, Policy(weekly=2), UTC_ZONE)) == {
        names[2]: ("weekly 2026-W49",),
        names[1]: ("weekly 2026-W48",),
    }


def test_periods_are_those_of_the_schedules_timezone() -> None:
    # 23:30 UTC on 29 November is 00:30 on the 30th in Berlin: two days there, one in UTC.
    names = named(at("2026-11-29T20:00"), at("2026-11-29T23:30"))
    assert len(verdicts(decide(names, 7, None, Policy(daily=5), BERLIN))) == 2
    assert verdicts(decide(names, 7, None, Policy(daily=5), UTC_ZONE)) == {
        names[1]: ("daily 2026-11-29",),
    } | {names[0]: ("oldest (daily 5 not filled)",)}


def test_a_rule_that_cannot_be_filled_keeps_the_oldest_backup() -> None:
    names = named(at("2026-01-01T01:00"), at("2026-01-01T02:00"), at("2026-11-30T03:00"))
    assert verdicts(decide(names, 7, None, Policy(yearly=3), UTC_ZONE)) == {
        names[2]: ("yearly 2026",),
        names[0]: ("oldest (yearly 3 not filled)",),
    }


def test_a_filled_rule_does_not_keep_the_oldest() -> None:
    names = named(at("2026-11-28T03:00"), at("2026-11-29T03:00"), at("2026-11-30T03:00"))
    assert names[0] not in verdicts(decide(names, 7, None, Policy(daily=2), UTC_ZONE))


def test_last_keeps_the_newest_n_numbered() -> None:
    names = named(*(at("2026-11-30T00:00") + timedelta(hours=hour) for hour in range(5)))
    assert verdicts(decide(names, 7, None, Policy(last=3), UTC_ZONE)) == {
        names[4]: ("last 1",),
        names[3]: ("last 2",),
        names[2]: ("last 3",),
    }


def test_rules_are_combined_with_or_and_every_reason_is_given() -> None:
    names = named(at("2026-10-15T03:00"), at("2026-11-29T03:00"), at("2026-11-30T03:00"))
    decisions = decide(names, 7, None, Policy(last=1, daily=2, monthly=2), UTC_ZONE)
    assert verdicts(decisions) == {
        names[2]: ("last 1", "daily 2026-11-30", "monthly 2026-11"),
        names[1]: ("daily 2026-11-29",),
        names[0]: ("monthly 2026-10",),
    }


def test_within_counts_from_the_newest_backup_not_from_now() -> None:
    newest = at("2020-05-10T12:00")  # years ago: a task that stopped running keeps what it had
    names = named(newest - timedelta(days=3), newest - timedelta(days=1, hours=23), newest)
    assert verdicts(decide(names, 7, None, Policy(within=parse_duration("2d")), UTC_ZONE)) == {
        names[2]: ("within 2d",),
        names[1]: ("within 2d",),
    }


def test_within_keeps_only_backups_strictly_newer_than_the_cutoff() -> None:
    newest = at("2026-11-30T12:00")
    names = named(newest - timedelta(weeks=1, days=3), newest)
    assert names[0] not in verdicts(
        decide(names, 7, None, Policy(within=parse_duration("1w3d")), UTC_ZONE)
    )


def test_a_month_back_from_the_31st_is_the_end_of_the_shorter_month() -> None:
    cutoff = parse_duration("1m").before(at("2024-03-31T10:00"), UTC_ZONE)
    assert cutoff == at("2024-02-29T10:00")
    assert parse_duration("1y2m").before(at("2024-03-31T10:00"), UTC_ZONE) == at("2023-01-31T10:00")


def test_a_calendar_day_back_across_a_clock_change_keeps_the_local_time() -> None:
    # Berlin left summer time on 25 October 2026: that day had 25 hours.
    after = datetime(2026, 10, 26, 9, 0, tzinfo=BERLIN)
    assert parse_duration("1d").before(after, BERLIN) == datetime(2026, 10, 25, 9, 0, tzinfo=BERLIN)


@pytest.mark.parametrize("text", ["", "2", "d", "2x", "1d1y", "0d", "0y0m", "-1d", "1.5d", "2 d"])
def test_a_malformed_duration_is_refused_with_the_form_expected(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_a_duration_has_its_parts() -> None:
    assert parse_duration("1y2m3w4d5h") == Duration("1y2m3w4d5h", 1, 2, 3, 4, 5)


def test_another_tasks_backups_and_other_files_are_never_decided_on() -> None:
    moment = at("2026-11-30T03:00")
    mine = named(moment)
    others = [*named(moment, task_id=77), "notes.txt", "web_" + mine[0]]
    assert [
        decision.name for decision in decide(mine + others, 7, None, Policy(last=1), UTC_ZONE)
    ] == mine


def test_the_newest_and_the_just_written_are_kept_whatever_the_rules() -> None:
    names = named(at("2026-11-28T03:00"), at("2026-11-29T03:00"), at("2026-11-30T03:00"))
    decisions = decide(names, 7, None, Policy(last=1), UTC_ZONE, protect=[names[0]])
    assert verdicts(decisions) == {names[2]: ("last 1",), names[0]: ("just written",)}


def test_no_rule_keeps_everything() -> None:
    names = named(at("2026-11-29T03:00"), at("2026-11-30T03:00"))
    decisions = decide(names, 7, None, Policy(), UTC_ZONE)
    assert {decision.reasons for decision in decisions} == {("max_backups 0 keeps all",)}
    assert all(decision.keep for decision in decisions)


def test_max_backups_alone_is_keep_last() -> None:
    assert policy_for(Storage(max_backups=3)) == Policy(last=3)
    assert policy_for(Storage(max_backups=0)) == Policy()


def test_max_backups_given_beside_keep_is_its_last() -> None:
    storage = Storage.model_validate({"max_backups": 4, "keep": {"daily": 7}})
    assert policy_for(storage) == Policy(last=4, daily=7)


def test_the_default_max_backups_does_not_join_keep() -> None:
    assert policy_for(Storage.model_validate({"keep": {"daily": 7}})) == Policy(daily=7)


def test_keep_within_becomes_a_duration() -> None:
    storage = Storage(keep=Keep(within="1w3d", yearly=2))
    assert policy_for(storage) == Policy(yearly=2, within=parse_duration("1w3d"))


# The model: the same rules stated the brute-force way, by grouping rather than walking.

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"]
T0 = at("2024-01-01T00:00")
moments = st.builds(
    lambda hours, seconds: T0 + timedelta(hours=hours, seconds=seconds),
    st.integers(0, 3 * 366 * 24),
    st.integers(0, 3599),
)
counts = st.none() | st.integers(1, 6)
durations = st.none() | st.sampled_from(["1h", "12h", "2d", "1w", "1w3d", "1m", "3m", "1y", "1y2m"])
policies = st.builds(
    lambda last, hourly, daily, weekly, monthly, yearly, within: Policy(
        last, hourly, daily, weekly, monthly, yearly, parse_duration(within) if within else None
    ),
    counts,
    counts,
    counts,
    counts,
    counts,
    counts,
    durations,
)
KEY_FORMATS = {
    "hourly": "%Y-%m-%dT%H",
    "daily": "%Y-%m-%d",
    "weekly": "%G-W%V",
    "monthly": "%Y-%m",
    "yearly": "%Y",
}


def model_keeps(taken: dict[str, datetime], policy: Policy, zone: ZoneInfo) -> set[str]:
    newest_first = sorted(taken, key=lambda name: (taken[name], name), reverse=True)
    if not newest_first:
        return set()
    if policy == Policy():
        return set(newest_first)
    kept = {newest_first[0]}
    if policy.last is not None:
        kept |= set(newest_first[: policy.last])
    for rule, key_format in KEY_FORMATS.items():
        count = getattr(policy, rule)
        if count is None:
            continue
        groups: dict[str, list[str]] = {}
        for name in newest_first:
            groups.setdefault(taken[name].astimezone(zone).strftime(key_format), []).append(name)
        newest_groups = list(groups.values())[:count]
        kept |= {group[0] for group in newest_groups}
        if len(groups) < count:
            kept.add(newest_first[-1])
    if policy.within is not None:
        cutoff = policy.within.before(taken[newest_first[0]], zone)
        kept |= {name for name in newest_first if taken[name] > cutoff}
    return kept


@given(st.lists(moments, max_size=25, unique=True), policies, st.sampled_from(ZONES))
def test_the_policy_keeps_exactly_what_the_model_keeps(
    taken_at: list[datetime], policy: Policy, zone_name: str
) -> None:
    zone = ZoneInfo(zone_name)
    taken = dict(zip(named(*taken_at), taken_at, strict=True))
    decisions = decide(list(taken), 7, None, policy, zone)
    assert sorted(decision.name for decision in decisions) == sorted(taken)
    assert {decision.name for decision in decisions if decision.keep} == model_keeps(
        taken, policy, zone
    )
    assert all(bool(decision.reasons) == decision.keep for decision in decisions)


@given(st.lists(moments, min_size=1, max_size=25, unique=True), policies, st.data())
def test_the_newest_and_a_protected_backup_are_always_kept(
    taken_at: list[datetime], policy: Policy, data: st.DataObject
) -> None:
    names = named(*taken_at)
    protected = data.draw(st.sampled_from(names))
    decisions = decide(names, 7, None, policy, BERLIN, protect=[protected])
    kept = {decision.name for decision in decisions if decision.keep}
    assert {decisions[0].name, protected} <= kept
