"""A task's retention policy as `restic forget` arguments, and restic's answer in our words."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from reconciler.models import parse_duration
from reconciler.resticcommands import forget_policy_argv, parse_forget, restic_duration
from reconciler.retention import Policy


def test_the_policy_becomes_keep_flags_on_the_tasks_tag_in_one_group() -> None:
    argv = forget_policy_argv(
        7, Policy(last=3, daily=7, weekly=4, within=parse_duration("2w")), dry_run=False
    )
    assert argv == [
        "restic", "forget", "--json", "--tag", "task:7", "--group-by", "",
        "--keep-last", "3", "--keep-daily", "7", "--keep-weekly", "4", "--keep-within", "14d",
    ]  # fmt: skip


def test_the_newest_snapshot_is_always_kept_even_by_a_calendar_only_policy() -> None:
    argv = forget_policy_argv(7, Policy(monthly=6), dry_run=False)
    assert argv[argv.index("--keep-last") + 1] == "1"


def test_a_dry_run_says_so_to_restic() -> None:
    assert forget_policy_argv(7, Policy(last=2), dry_run=True)[-1] == "--dry-run"
    assert "--dry-run" not in forget_policy_argv(7, Policy(last=2), dry_run=False)


@given(
    st.integers(0, 20), st.integers(0, 20), st.integers(0, 20), st.integers(0, 20),
    st.integers(0, 20),
)  # fmt: skip
def test_a_within_span_keeps_its_length_in_restics_units(
    years: int, months: int, weeks: int, days: int, hours: int
) -> None:
    parts = zip((years, months, weeks, days, hours), "ymwdh", strict=True)
    text = "".join(f"{count}{unit}" for count, unit in parts if count)
    if not text:
        return
    written = restic_duration(parse_duration(text))
    back = parse_duration(written)  # restic's form is one of ours, without weeks
    assert (back.years, back.months, back.weeks, back.hours) == (years, months, 0, hours)
    assert back.days == weeks * 7 + days


def _snapshot(time: str, path: str) -> dict[str, object]:
    return {"time": time, "paths": [path], "tags": ["task:5"], "id": path, "short_id": path[:8]}


def test_restics_reasons_are_given_as_the_periods_they_stand_for() -> None:
    newest = _snapshot("2026-12-01T00:30:00+01:00", "/nightly/task-5-a.tar")
    older = _snapshot("2026-11-30T00:30:00+01:00", "/nightly/task-5-b.tar")
    dropped = _snapshot("2026-11-29T12:00:00+01:00", "/nightly/task-5-c.tar")
    answer = [
        {
            "keep": [newest, older],
            "remove": [dropped],
            "reasons": [
                {"snapshot": newest, "matches": ["last snapshot", "daily snapshot"]},
                {"snapshot": older, "matches": ["daily snapshot", "within 2d"]},
            ],
        }
    ]
    verdicts = parse_forget(json.dumps(answer).encode(), "nightly")
    assert [verdict.snapshot_id for verdict in verdicts] == [
        "/nightly/task-5-a.tar", "/nightly/task-5-b.tar", "/nightly/task-5-c.tar",
    ]  # fmt: skip
    decisions = [verdict.decision for verdict in verdicts]
    assert [(d.name, d.keep, d.reasons) for d in decisions] == [
        ("task-5-a.tar", True, ("last 1", "daily 2026-12-01")),
        ("task-5-b.tar", True, ("daily 2026-11-30", "within 2d")),
        ("task-5-c.tar", False, ()),
    ]
    assert decisions[0].taken_at == datetime(2026, 11, 30, 23, 30, tzinfo=UTC)


def test_a_snapshot_outside_the_storage_path_is_named_by_its_whole_path() -> None:
    moved = _snapshot("2026-12-01T00:30:00Z", "/old/task-5-a.tar")
    answer = [{"keep": [moved], "remove": None, "reasons": [{"snapshot": moved, "matches": []}]}]
    verdict = parse_forget(json.dumps(answer).encode(), "nightly")[0]
    assert verdict.decision.name == "/old/task-5-a.tar"


def test_two_snapshots_of_one_time_and_path_get_each_its_own_reasons() -> None:
    first = {**_snapshot("2026-12-01T00:30:00Z", "/task-5-a.tar"), "id": "one", "tree": "t1"}
    copy = {**first, "id": "two", "tree": "t2"}
    answer = [
        {
            "keep": [first],
            "remove": [copy],
            "reasons": [{"snapshot": first, "matches": ["last snapshot"]}],
        }
    ]
    verdicts = parse_forget(json.dumps(answer).encode(), "")
    assert {(v.snapshot_id, v.decision.keep, v.decision.reasons) for v in verdicts} == {
        ("one", True, ("last 1",)),
        ("two", False, ()),
    }
