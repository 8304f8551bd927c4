"""Commits reach the running scheduler: edit, add, rename, delete, break, duplicate.

Everything here is real: a git repository made with the git CLI, GitStore, the state store on
SQLite and the Scheduler; only the clock is a fake, so fire times are predictable.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.documents import MAX_FILE_BYTES
from reconciler.engine import Engine
from reconciler.gitstore import GitStore
from reconciler.models import ResolvedTask
from reconciler.scheduler import Scheduler
from reconciler.state import StateStore
from reconciler.state.sqlite import SqliteStateStore
from tests import configset
from tests.gitrepo import commit_files, commit_symlink, git, init_repo, rename

pytestmark = pytest.mark.anyio
START = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.current = now

    def now(self) -> datetime:
        return self.current


@dataclass
class Rig:
    repo: Path
    engine: Engine
    scheduler: Scheduler
    state: StateStore
    clock: FakeClock
    fired: list[tuple[int, datetime]]

    @property
    def running(self) -> dict[int, ResolvedTask]:
        return dict(self.scheduler.tasks)

    async def commit(self, files: dict[str, str | None]) -> None:
        commit_files(self.repo, files, "test edit")
        await self.engine.sync()


def make_rig(repo: Path, state: Path, config_set: Path | None = None) -> Rig:
    clock = FakeClock(START)
    fired: list[tuple[int, datetime]] = []
    history = SqliteStateStore(state)
    scheduler = Scheduler(clock, lambda task, slot: fired.append((task.id, slot)))
    engine = Engine(
        store=GitStore(config_set or repo), scheduler=scheduler, state=history, clock=clock
    )
    return Rig(repo, engine, scheduler, history, clock, fired)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    repo = tmp_path / "config"
    init_repo(repo, {**configset.base_files(), "tasks/1.yaml": configset.task(1)})
    made = make_rig(repo, tmp_path / "state.db")
    yield made
    made.engine.close()
    made.state.close()


async def test_the_first_sync_schedules_every_task_of_the_head_commit(rig: Rig) -> None:
    await rig.engine.sync()
    assert sorted(rig.running) == [1]
    assert rig.engine.revision == rig.engine.store.head()
    assert rig.engine.next_fire(1) == datetime(2026, 3, 11, 2, 30, tzinfo=UTC)


async def test_syncing_the_same_revision_again_changes_nothing(rig: Rig) -> None:
    await rig.engine.sync()
    before = rig.running
    plan = await rig.engine.sync()
    assert plan.empty
    assert rig.running[1] is before[1]


async def test_a_head_already_applied_is_not_reconciled_again(rig: Rig) -> None:
    await rig.engine.sync()
    reconciled_at = rig.engine.reconciled_at
    await rig.engine.sync()
    assert rig.engine.reconciles == 1
    rig.clock.current += timedelta(seconds=5)
    await rig.engine.sync()
    assert (rig.engine.reconciles, rig.engine.reconciled_at) == (1, reconciled_at)


async def test_a_full_resync_reconciles_even_a_head_already_applied(rig: Rig) -> None:
    await rig.engine.sync()
    await rig.engine.sync(full=True)
    assert rig.engine.reconciles == 2


async def test_a_committed_edit_reaches_the_scheduler(rig: Rig) -> None:
    await rig.engine.sync()
    await rig.commit({"tasks/1.yaml": configset.task(1, schedule={"custom_cron": "0 5 * * *"})})
    assert rig.running[1].task.schedule.custom_cron == "0 5 * * *"
    assert rig.engine.next_fire(1) == datetime(2026, 3, 11, 5, 0, tzinfo=UTC)


async def test_an_uncommitted_edit_is_not_applied(rig: Rig) -> None:
    await rig.engine.sync()
    (rig.repo / "tasks/1.yaml").write_text(configset.task(1, label="draft"))
    await rig.engine.sync()
    assert rig.running[1].task.label == "task 1"


async def test_an_added_file_adds_a_task(rig: Rig) -> None:
    await rig.engine.sync()
    await rig.commit({"tasks/2.yaml": configset.task(2, user_id=2)})
    assert sorted(rig.running) == [1, 2]


async def test_a_renamed_file_is_the_same_task_not_a_delete_and_create(rig: Rig) -> None:
    await rig.engine.sync()
    before = rig.running[1]
    rename(rig.repo, "tasks/1.yaml", "tasks/1-renamed.yaml", "rename")
    plan = await rig.engine.sync()
    assert plan.empty
    assert rig.running[1] is before
    assert rig.engine.desired.task_paths[1] == "tasks/1-renamed.yaml"


async def test_a_deleted_file_removes_its_task(rig: Rig) -> None:
    await rig.engine.sync()
    await rig.commit({"tasks/1.yaml": None})
    assert rig.running == {}
    assert rig.engine.next_fire(1) is None


async def test_a_broken_commit_keeps_the_last_good_version_running(rig: Rig) -> None:
    await rig.engine.sync()
    await rig.commit({"tasks/1.yaml": "id: 1\nschedule: [broken\n"})
    assert rig.running[1].task.label == "task 1"
    (error,) = rig.engine.errors
    assert error.path == "tasks/1.yaml"
    assert error.line is not None


async def test_a_duplicate_id_in_a_new_file_is_rejected_and_reported(rig: Rig) -> None:
    await rig.engine.sync()
    await rig.commit({"tasks/0-copy.yaml": configset.task(1, label="copy")})
    assert rig.running[1].task.label == "task 1"
    (error,) = rig.engine.errors
    assert error.path == "tasks/0-copy.yaml"
    assert "already defined in tasks/1.yaml" in error.message


async def test_a_duplicate_key_is_reported_and_the_last_good_version_keeps_running(
    rig: Rig,
) -> None:
    await rig.engine.sync()
    await rig.commit({"tasks/1.yaml": configset.task(1) + "label: last wins?\n"})
    assert rig.running[1].task.label == "task 1"
    (error,) = rig.engine.errors
    assert (error.path, error.line) == ("tasks/1.yaml", 12)
    assert error.message == "duplicate key 'label' (first given on line 3)"


async def test_a_committed_symbolic_link_is_reported_and_not_followed(
    rig: Rig, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_text(configset.task(9))
    commit_symlink(rig.repo, "tasks/9.yaml", str(outside), "link a task from outside")
    commit_symlink(rig.repo, "tasks/shared", str(tmp_path), "link a folder")
    await rig.engine.sync()
    assert sorted(rig.running) == [1]
    assert [(error.path, error.line) for error in rig.engine.errors] == [
        ("tasks/9.yaml", None),
        ("tasks/shared", None),
    ]
    assert all("symbolic link" in error.message for error in rig.engine.errors)


async def test_a_file_replaced_by_a_link_keeps_its_last_good_version_and_is_reported(
    rig: Rig,
) -> None:
    await rig.engine.sync()
    git(rig.repo, "rm", "-q", "tasks/1.yaml")
    commit_symlink(rig.repo, "tasks/1.yaml", "/etc/passwd", "swap the task for a link")
    await rig.engine.sync()
    assert rig.running[1].task.label == "task 1"
    (error,) = rig.engine.errors
    assert (error.path, "symbolic link" in error.message) == ("tasks/1.yaml", True)


async def test_a_removed_link_takes_its_error_with_it(rig: Rig) -> None:
    commit_symlink(rig.repo, "tasks/shared", "/etc", "link a folder")
    await rig.engine.sync()
    await rig.commit({"tasks/shared": None})
    assert rig.engine.errors == ()


async def test_a_committed_file_over_the_size_limit_is_reported_and_not_applied(
    rig: Rig,
) -> None:
    padding = "# " + "x" * MAX_FILE_BYTES + "\n"
    await rig.commit({"tasks/2.yaml": configset.task(2) + padding})
    assert sorted(rig.running) == [1]
    (error,) = rig.engine.errors
    assert (error.path, error.line) == ("tasks/2.yaml", None)
    assert "over the limit of 1,048,576 bytes (1 MiB)" in error.message


async def test_a_committed_file_name_with_a_backslash_is_reported_and_not_applied(
    rig: Rig,
) -> None:
    await rig.commit({"tasks/106-a\\b.yaml": configset.task(106)})
    assert sorted(rig.running) == [1]
    (error,) = rig.engine.errors
    assert error.path == "tasks/106-a\\b.yaml"
    assert "backslash" in error.message


async def test_an_id_too_large_to_store_is_a_field_error_not_a_failed_reconcile(
    rig: Rig,
) -> None:
    await rig.commit({"tasks/2.yaml": configset.task(10**20)})
    assert sorted(rig.running) == [1]
    (error,) = rig.engine.errors
    assert (error.path, error.line, error.field) == ("tasks/2.yaml", 1, "id")


async def test_only_changed_files_are_parsed_again(rig: Rig) -> None:
    await rig.engine.sync()
    assert rig.engine.last_parsed == 6
    await rig.commit({"tasks/2.yaml": configset.task(2)})
    assert rig.engine.last_parsed == 1


async def test_a_folder_inside_a_larger_repository_is_the_config_set(tmp_path: Path) -> None:
    repo = tmp_path / "ops"
    files = {f"backups/{path}": text for path, text in configset.base_files().items()}
    files["backups/tasks/1.yaml"] = configset.task(1)
    files["README.yaml"] = "not: config"
    init_repo(repo, files)
    rig = make_rig(repo, tmp_path / "state.db", config_set=repo / "backups")
    await rig.engine.sync()
    assert sorted(rig.running) == [1]
    assert rig.engine.errors == ()
    rig.engine.close()
    rig.state.close()


async def test_a_task_first_seen_after_its_last_slot_is_not_caught_up(rig: Rig) -> None:
    await rig.engine.sync()  # at 12:00, after that day's 02:30 slot
    assert rig.state.schedule.first_seen()[1] == START
    assert rig.engine.catch_up(timedelta(hours=12)) == []


async def test_a_missed_slot_is_caught_up_once_within_the_deadline(rig: Rig) -> None:
    await rig.engine.sync()
    rig.clock.current = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)  # 02:30 slot missed
    due = rig.engine.catch_up(timedelta(hours=12))
    assert [(task.id, slot) for task, slot in due] == [
        (1, datetime(2026, 3, 11, 2, 30, tzinfo=UTC))
    ]


async def test_a_slot_missed_longer_ago_than_the_deadline_is_not_caught_up(rig: Rig) -> None:
    await rig.engine.sync()
    rig.clock.current = datetime(2026, 3, 11, 20, 0, tzinfo=UTC)
    assert rig.engine.catch_up(timedelta(hours=12)) == []


async def test_a_slot_that_passed_while_a_daemon_was_up_is_not_caught_up_after_a_restart(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "config"
    init_repo(repo, {**configset.base_files(), "tasks/1.yaml": configset.task(1)})
    state = tmp_path / "state.db"
    first = make_rig(repo, state)
    await first.engine.sync()
    alive = first.state.schedule.begin_alive(START, forget_before=START - timedelta(days=1))
    # At 12:10 the cron moves to 12:05 today, a slot that has just passed: the scheduler rightly
    # waits for tomorrow's, and a restart must not take today's for a missed one.
    first.clock.current = START + timedelta(minutes=10)
    await first.commit({"tasks/1.yaml": configset.task(1, schedule={"custom_cron": "5 12 * * *"})})
    first.state.schedule.still_alive(alive, first.clock.current)
    first.state.close()

    restarted = make_rig(repo, state)
    restarted.clock.current = START + timedelta(minutes=15)
    await restarted.engine.sync()
    assert restarted.engine.catch_up(timedelta(hours=12)) == []
    restarted.state.close()


async def test_a_slot_that_passed_while_no_daemon_was_up_is_caught_up(tmp_path: Path) -> None:
    repo = tmp_path / "config"
    init_repo(repo, {**configset.base_files(), "tasks/1.yaml": configset.task(1)})
    state = tmp_path / "state.db"
    first = make_rig(repo, state)
    await first.engine.sync()
    alive = first.state.schedule.begin_alive(START, forget_before=START - timedelta(days=1))
    first.state.schedule.still_alive(alive, START + timedelta(hours=10))  # down from 22:00 on
    first.state.close()

    restarted = make_rig(repo, state)
    restarted.clock.current = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
    await restarted.engine.sync()
    due = restarted.engine.catch_up(timedelta(hours=12))
    assert [(task.id, slot) for task, slot in due] == [
        (1, datetime(2026, 3, 11, 2, 30, tzinfo=UTC))
    ]
    restarted.state.close()
