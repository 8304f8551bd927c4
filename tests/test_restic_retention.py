"""Retention and prune on a restic repository, with the real restic binary: `restic forget --tag
task:<id>` by the task's policy, restic's own calendar in the task's time zone, and the daemon's
scheduled `restic prune` under the repository's lock."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from reconciler.destinations.restic import ResticStore
from reconciler.models import Frequency, Schedule, Weekday
from reconciler.repolocks import RepositoryLocks
from reconciler.resticprune import PruneResult, prune_repository
from reconciler.retention import Policy, backup_name
from reconciler.types import RunStatus
from tests import configset
from tests.gitrepo import init_repo
from tests.runs import files_task
from tests.servers import SshServer
from tests.test_cli import reconciler
from tests.test_prune_cli import TAKEN
from tests.test_restic import PASSWORD, harness, make_tree, on_restic, restic
from tests.test_restic import restic_destination as destination_at

BERLIN = "Europe/Berlin"


def snapshot(repository: Path, name: str, at: datetime, tag: str = "task:5") -> None:
    """A snapshot of one file as a run stores it, taken at `at` on a Berlin clock."""
    env = {**os.environ, "RESTIC_REPOSITORY": str(repository), "RESTIC_PASSWORD": PASSWORD}
    local = at.astimezone(ZoneInfo(BERLIN)).replace(tzinfo=None)
    subprocess.run(
        ["restic", "backup", "-q", "--stdin", "--stdin-filename", f"nightly/{name}",
         "--tag", tag, "--time", local.strftime("%Y-%m-%d %H:%M:%S")],
        input=name.encode(), env={**env, "TZ": BERLIN}, check=True, capture_output=True,
    )  # fmt: skip


def snapshot_names(repository: Path) -> list[str]:
    listed = json.loads(restic(repository, "snapshots", "--json"))
    return sorted(item["paths"][0].removeprefix("/nightly/") for item in listed)


def name(key: str, task_id: int = 5) -> str:
    return backup_name(task_id, None, TAKEN[key], "tar")


def config_repo(tmp_path: Path, keep: dict[str, object]) -> tuple[Path, Path, Path]:
    repo, state, repository = tmp_path / "config", tmp_path / "state.db", tmp_path / "restic"
    files = configset.base_files()
    files["destinations/one.yaml"] = configset.dump(
        {
            "id": 1, "user_id": 1, "label": "vault", "type": "restic",
            "repository": str(repository), "password": {"env": "RESTIC_PW"},
        }
    )  # fmt: skip
    files["tasks/5.yaml"] = configset.task(
        5,
        schedule={"frequency": "daily", "time": "00:30", "timezone": BERLIN},
        storage={"keep": keep, "path": "nightly"},
    )
    init_repo(repo, files)
    restic(repository, "init")
    for key in TAKEN:
        snapshot(repository, name(key), TAKEN[key])
    snapshot(repository, name("october", task_id=55), TAKEN["october"], tag="task:55")
    return repo, state, repository


@pytest.fixture
def restic_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTIC_PW", PASSWORD)


@pytest.mark.usefixtures("restic_password")
def test_a_dry_run_on_restic_gives_the_verdicts_of_every_other_destination(
    tmp_path: Path,
) -> None:
    repo, state, repository = config_repo(tmp_path, {"last": 1, "daily": 3, "weekly": 2})
    result = reconciler("prune", "5", "--dry-run", "--repo", repo, "--state", state)
    assert result.returncode == 0, result.stderr
    # As tests/test_prune_cli.py's, on restic's calendar: the snapshots carry Berlin's offset.
    assert result.stdout.splitlines() == [
        f"keep    {name('newest')}  last 1, daily 2026-12-01, weekly 2026-W49",
        f"keep    {name('monday')}  daily 2026-11-30",
        f"keep    {name('sunday')}  daily 2026-11-29, weekly 2026-W48",
        f"remove  {name('sunday_early')}",
        f"remove  {name('october')}",
        "task 5: 3 kept, 2 would remove",
    ]
    assert len(snapshot_names(repository)) == 6


@pytest.mark.usefixtures("restic_password")
def test_prune_on_restic_forgets_what_the_dry_run_marked_and_no_other_tasks_snapshot(
    tmp_path: Path,
) -> None:
    repo, state, repository = config_repo(tmp_path, {"within": "2d", "monthly": 6})
    result = reconciler("prune", "5", "--repo", repo, "--state", state)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "task 5: 3 kept, 2 removed"
    assert snapshot_names(repository) == sorted(
        [name("newest"), name("monday"), name("october"), name("october", task_id=55)]
    )


def test_a_runs_snapshot_is_taken_on_the_tasks_clock(sshd: SshServer, tmp_path: Path) -> None:
    task = on_restic(files_task(sshd, tmp_path / "unused", make_tree(tmp_path, size=1000)),
                     tmp_path / "repo")  # fmt: skip
    berlin = task.task.schedule.model_copy(update={"timezone": BERLIN})
    task = task.model_copy(update={"task": task.task.model_copy(update={"schedule": berlin})})
    assert harness(tmp_path).run(task) is RunStatus.SUCCESSFUL
    taken = datetime.fromisoformat(
        json.loads(restic(tmp_path / "repo", "snapshots", "--json"))[0]["time"]
    )
    assert taken.utcoffset() in (timedelta(hours=1), timedelta(hours=2))


def test_rotation_on_restic_keeps_the_days_it_is_told_to(sshd: SshServer, tmp_path: Path) -> None:
    from reconciler.models import Keep, Storage

    source = make_tree(tmp_path, size=1000)
    task = on_restic(
        files_task(sshd, tmp_path / "unused", source, storage=Storage(keep=Keep(daily=2))),
        tmp_path / "repo",
    )
    rig = harness(tmp_path)
    for step in (timedelta(hours=1), timedelta(hours=1), timedelta(days=1), timedelta(days=1)):
        assert rig.run(task) is RunStatus.SUCCESSFUL
        rig.clock.advance(step)
    listed = json.loads(restic(tmp_path / "repo", "snapshots", "--json"))
    # Four runs on three days: the newest of the last two days stay.
    assert len(listed) == 2
    logs = "\n".join(run.output for run in rig.state.runs.page(task.id, 0, 10)[0])
    assert "rotation: forgot" in logs


def test_prune_removes_the_data_only_forgotten_snapshots_held(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    restic(repository, "init")
    env = {**os.environ, "RESTIC_REPOSITORY": str(repository), "RESTIC_PASSWORD": PASSWORD}
    subprocess.run(["restic", "backup", "-q", "--stdin", "--stdin-filename", "big", "--tag",
                    "task:1"], input=os.urandom(3_000_000), env=env, check=True)  # fmt: skip
    restic(repository, "forget", "--keep-last", "0", "--tag", "task:1", "--keep-tag", "none")
    before = sum(path.stat().st_size for path in (repository / "data").rglob("*"))

    result, message = prune_repository(
        destination_at(repository), lambda _: PASSWORD, RepositoryLocks(), threading.Event()
    )

    assert result is PruneResult.DONE, message
    after = sum(path.stat().st_size for path in (repository / "data").rglob("*"))
    assert before > 3_000_000 > after


def test_a_missing_repository_is_not_pruned_and_not_created(tmp_path: Path) -> None:
    result, message = prune_repository(
        destination_at(tmp_path / "none"), lambda _: PASSWORD, RepositoryLocks(),
        threading.Event(),
    )  # fmt: skip
    assert result is PruneResult.SKIPPED
    assert "no restic repository" in message
    assert not (tmp_path / "none").exists()


def test_the_daemons_prune_waits_for_a_running_backup_of_the_repository(tmp_path: Path) -> None:
    locks = RepositoryLocks()
    store = ResticStore(destination_at(tmp_path / "repo"), lambda _: PASSWORD, locks=locks)
    writer = store.open_writer("", "task-1-held.tar")
    writer.write(b"data")
    finished = threading.Event()

    def prune() -> None:
        prune_repository(destination_at(tmp_path / "repo"), lambda _: PASSWORD, locks,
                         threading.Event())  # fmt: skip
        finished.set()

    threading.Thread(target=prune, daemon=True).start()
    time.sleep(1.5)
    assert not finished.is_set()
    writer.commit()
    assert finished.wait(60)
    assert len(store.snapshots()) == 1


def test_a_prune_asked_for_after_the_stop_does_not_start(tmp_path: Path) -> None:
    restic(tmp_path / "repo", "init")
    cancel = threading.Event()
    cancel.set()
    result, message = prune_repository(
        destination_at(tmp_path / "repo"), lambda _: PASSWORD, RepositoryLocks(), cancel
    )
    assert (result, message) == (PruneResult.SKIPPED, "stopped with the daemon")


def test_the_lock_of_a_killed_restic_does_not_block_the_repository(tmp_path: Path) -> None:
    restic(tmp_path / "repo", "init")
    env = {**os.environ, "RESTIC_REPOSITORY": str(tmp_path / "repo"), "RESTIC_PASSWORD": PASSWORD}
    holder = subprocess.Popen(
        ["restic", "backup", "--stdin", "--stdin-filename", "held"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            if any((tmp_path / "repo" / "locks").iterdir()):
                break
            time.sleep(0.05)
    finally:
        holder.kill()  # as a timeout or a stop kills: its lock stays behind
        holder.wait()
        assert holder.stdin is not None
        holder.stdin.close()
    assert any((tmp_path / "repo" / "locks").iterdir())
    store = ResticStore(
        destination_at(tmp_path / "repo"), lambda _: PASSWORD, lock_attempts=2,
        lock_first_pause=0.1,
    )  # fmt: skip
    # forget needs the repository to itself: the dead process's lock is removed for it.
    assert store.forget(1, Policy(last=1), "", apply=True) == []
    assert not any((tmp_path / "repo" / "locks").iterdir())


def test_rotation_never_forgets_the_backup_just_written(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    restic(repository, "init")
    at = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    # Two snapshots with the same time (a DST fall-back hour's two 02:30s look alike).
    for name in ("backup_7_20261025003000.tar", "backup_7_20261025013000.tar"):
        subprocess.run(
            ["restic", "backup", "-q", "--stdin", "--stdin-filename", name, "--tag", "task:7",
             "--time", at.strftime("%Y-%m-%d %H:%M:%S")],
            input=name.encode(), check=True, capture_output=True,
            env={**os.environ, "RESTIC_REPOSITORY": str(repository), "RESTIC_PASSWORD": PASSWORD,
                 "TZ": "UTC"},
        )  # fmt: skip
    store = ResticStore(destination_at(repository), lambda _: PASSWORD)
    just_written = "backup_7_20261025013000.tar"
    decisions = store.forget(7, Policy(last=1), "", apply=True, protect=[just_written])
    assert decisions is not None
    assert {d.name for d in decisions if d.keep} >= {just_written}
    assert just_written in snapshot_names_at_root(repository)


def snapshot_names_at_root(repository: Path) -> list[str]:
    listed = json.loads(restic(repository, "snapshots", "--json"))
    return sorted(item["paths"][0].removeprefix("/") for item in listed)


def test_rotation_leaves_a_busy_repository_for_the_next_run(tmp_path: Path) -> None:
    locks = RepositoryLocks()
    store = ResticStore(destination_at(tmp_path / "repo"), lambda _: PASSWORD, locks=locks)
    with locks.shared(str(tmp_path / "repo")):
        assert store.forget(1, Policy(last=1), "", apply=True, wait=False) is None


def test_the_default_prune_is_weekly_on_sunday_at_four_utc(tmp_path: Path) -> None:
    prune = destination_at(tmp_path).prune
    assert prune is not None
    assert prune.schedule == Schedule(
        frequency=Frequency.WEEKLY, time="04:00", weekday=Weekday.SUNDAY, timezone="UTC"
    )
