"""Backup names and rotation: which files a successful run may delete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from random import Random
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.models import Storage
from reconciler.retention import (
    BackupName,
    Policy,
    backup_name,
    decide,
    parse_backup_name,
    policy_for,
)

T0 = datetime(2024, 3, 1, 10, 30, 5, tzinfo=UTC)

appended_names = st.none() | st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}\Z")
extensions = st.sampled_from(["tar.zst", "sql.zst", "tar.zst.gpg", "sql.zst.gpg", "tar"])
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)
).map(lambda at: at.replace(microsecond=0))
task_ids = st.integers(min_value=1, max_value=200)


def test_a_name_has_the_documented_form() -> None:
    assert backup_name(7, None, T0, "tar.zst") == "backup_7_20240301103005.tar.zst"
    assert backup_name(7, "web", T0, "sql.zst.gpg") == "web_backup_7_20240301103005.sql.zst.gpg"


def test_the_time_in_a_name_is_utc() -> None:
    berlin_noon = datetime(2024, 7, 1, 12, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    assert backup_name(1, None, berlin_noon, "tar") == "backup_1_20240701100000.tar"


@pytest.mark.parametrize(
    ("task_id", "appended", "at", "extension"),
    [
        (0, None, T0, "tar"),
        (1, "../x", T0, "tar"),
        (1, ".hidden", T0, "tar"),
        (1, "a/b", T0, "tar"),
        (1, None, T0.replace(tzinfo=None), "tar"),
        (1, None, T0, "tar/../x"),
        (1, None, T0, ""),
        (1, None, T0, "tar_zst"),
    ],
)
def test_a_name_that_could_not_be_parsed_back_is_refused(
    task_id: int, appended: str | None, at: datetime, extension: str
) -> None:
    with pytest.raises(ValueError, match=r"must|may only"):
        backup_name(task_id, appended, at, extension)


@given(task_ids, appended_names, times, extensions)
def test_every_written_name_parses_back_to_its_parts(
    task_id: int, appended: str | None, at: datetime, extension: str
) -> None:
    name = backup_name(task_id, appended, at, extension)
    assert parse_backup_name(name) == BackupName(task_id, appended, at, extension)


def test_an_appended_name_that_looks_like_a_backup_name_still_parses_unambiguously() -> None:
    tricky = "backup_1_20200101000000.tar"
    name = backup_name(1, tricky, T0, "tar.zst")
    assert parse_backup_name(name) == BackupName(1, tricky, T0, "tar.zst")


@pytest.mark.parametrize(
    "name",
    [
        "notes.txt",
        "backup_1_20240301103005",
        "backup_1_2024030110300.tar",
        "backup_01_20240301103005.tar",
        "backup_1_20241301103005.tar",
        ".backup_1_20240301103005.tar.zst.partial",
        ".web_backup_1_20240301103005.tar.zst.partial",
        "backup_1_20240301103005.tar.zst~",
        "Backup_1_20240301103005.tar",
    ],
)
def test_names_we_did_not_write_do_not_parse(name: str) -> None:
    assert parse_backup_name(name) is None


def backups_to_delete(
    names: list[str], task_id: int, appended: str | None, max_backups: int, keep: str
) -> list[str]:
    """What a run's rotation deletes under `max_backups` alone, oldest first."""
    policy = policy_for(Storage(max_backups=max_backups))
    decisions = decide(names, task_id, appended, policy, ZoneInfo("UTC"), protect=(keep,))
    return [decision.name for decision in reversed(decisions) if not decision.keep]


def own(task_id: int, appended: str | None, count: int, extension: str = "tar.zst") -> list[str]:
    return [
        backup_name(task_id, appended, T0 + timedelta(days=day), extension) for day in range(count)
    ]


def test_rotation_deletes_the_oldest_until_max_backups_remain() -> None:
    names = own(1, None, 5)
    assert backups_to_delete(names, 1, None, 3, keep=names[-1]) == names[:2]


def test_rotation_with_max_backups_zero_keeps_everything() -> None:
    names = own(1, None, 50)
    assert backups_to_delete(names, 1, None, 0, keep=names[-1]) == []


def test_rotation_never_touches_a_task_whose_id_shares_digits() -> None:
    names = own(1, None, 2) + own(11, None, 4) + own(111, None, 4)
    assert backups_to_delete(names, 1, None, 1, keep=names[1]) == [names[0]]


def test_rotation_never_touches_another_appended_filename_of_the_same_task() -> None:
    mine, theirs = own(3, "web", 3), own(3, None, 3) + own(3, "web2", 3)
    assert backups_to_delete(mine + theirs, 3, "web", 1, keep=mine[-1]) == mine[:2]


def test_rotation_counts_encrypted_and_plain_backups_of_the_task_together() -> None:
    plain, encrypted = own(2, None, 2, "sql.zst"), own(2, None, 3, "sql.zst.gpg")[2:]
    assert backups_to_delete(plain + encrypted, 2, None, 1, keep=encrypted[0]) == plain


def test_rotation_keeps_the_backup_just_written_and_the_newest_when_they_differ() -> None:
    names = own(1, None, 4)
    assert backups_to_delete(names, 1, None, 1, keep=names[0]) == names[1:3]


def test_a_count_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"keep\.last must be 1 or more"):
        Policy(last=0)


foreign_names = st.lists(
    st.one_of(
        st.text(max_size=30),
        st.builds(backup_name, task_ids, appended_names, times, extensions),
    ),
    max_size=15,
)


@st.composite
def directories(draw: st.DrawFn) -> tuple[int, str | None, list[str], list[str], str]:
    """A task, its own backups (distinct names), everything else in the directory, and `keep`."""
    task_id = draw(task_ids)
    appended = draw(appended_names)
    mine = sorted(
        {
            backup_name(task_id, appended, at, ext)
            for at, ext in draw(st.lists(st.tuples(times, extensions), max_size=15))
        }
    )
    others = [name for name in draw(foreign_names) if _is_foreign(name, task_id, appended)]
    keep_one_of_mine: bool = draw(st.booleans())
    keep = draw(st.sampled_from(mine)) if mine and keep_one_of_mine else "not-listed"
    return task_id, appended, mine, others, keep


def _is_foreign(name: str, task_id: int, appended: str | None) -> bool:
    parsed = parse_backup_name(name)
    return parsed is None or (parsed.task_id, parsed.appended_filename) != (task_id, appended)


@given(directories(), st.integers(min_value=0, max_value=20), st.randoms())
def test_rotation_properties(
    directory: tuple[int, str | None, list[str], list[str], str],
    max_backups: int,
    random: Random,
) -> None:
    task_id, appended, mine, others, keep = directory
    shuffled = mine + others  # the order a listing comes in must not matter
    random.shuffle(shuffled)

    deleted = backups_to_delete(shuffled, task_id, appended, max_backups, keep)

    assert set(deleted) <= set(mine), "never deletes a name that is not the task's own"
    assert keep not in deleted
    assert len(deleted) == len(set(deleted))
    remaining = [name for name in mine if name not in deleted]
    by_age = sorted(mine, key=lambda name: (_taken_at(name), name))
    if max_backups == 0:
        assert deleted == []
    else:
        newest = by_age[-max_backups:]
        assert remaining == sorted({*newest, *([keep] if keep in mine else [])})
    assert deleted == [name for name in by_age if name in deleted], "oldest first"


def _taken_at(name: str) -> datetime:
    parsed = parse_backup_name(name)
    assert parsed is not None
    return parsed.taken_at
