"""`reconciler prune`: the retention policy over what the destination holds, shown and applied."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from reconciler.retention import backup_name
from tests import configset
from tests.gitrepo import init_repo
from tests.test_cli import reconciler

# Nightly backups at 23:30 UTC, which is 00:30 the next day in Berlin, the task's timezone.
TAKEN = {
    "newest": datetime(2026, 11, 30, 23, 30, tzinfo=UTC),  # Berlin: Tuesday 1 December
    "monday": datetime(2026, 11, 29, 23, 30, tzinfo=UTC),  # Berlin: Monday 30 November
    "sunday": datetime(2026, 11, 28, 23, 30, tzinfo=UTC),  # Berlin: Sunday 29 November
    "sunday_early": datetime(2026, 11, 28, 10, 0, tzinfo=UTC),  # Berlin: Saturday 28 November
    "october": datetime(2026, 10, 10, 10, 0, tzinfo=UTC),
}


def config_repo(tmp_path: Path, keep: dict[str, object]) -> tuple[Path, Path, Path]:
    repo, state, backups = tmp_path / "config", tmp_path / "state.db", tmp_path / "backups"
    files = configset.base_files()
    files["destinations/one.yaml"] = configset.destination(1, 1, path=str(backups))
    files["tasks/5.yaml"] = configset.task(
        5,
        schedule={"frequency": "daily", "time": "00:30", "timezone": "Europe/Berlin"},
        storage={"keep": keep},
    )
    init_repo(repo, files)
    backups.mkdir()
    for moment in TAKEN.values():
        (backups / backup_name(5, None, moment, "tar.zst")).write_bytes(b"backup")
    for foreign in (backup_name(55, None, TAKEN["october"], "tar.zst"), "README.txt"):
        (backups / foreign).write_bytes(b"not task 5's")
    return repo, state, backups


def name(key: str) -> str:
    return backup_name(5, None, TAKEN[key], "tar.zst")


def test_a_dry_run_prints_every_backup_with_its_verdict_and_reasons_and_deletes_none(
    tmp_path: Path,
) -> None:
    repo, state, backups = config_repo(tmp_path, {"last": 1, "daily": 3, "weekly": 2})
    before = sorted(path.name for path in backups.iterdir())
    result = reconciler("prune", "5", "--dry-run", "--repo", repo, "--state", state)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"keep    {name('newest')}  last 1, daily 2026-12-01, weekly 2026-W49",
        f"keep    {name('monday')}  daily 2026-11-30",
        f"keep    {name('sunday')}  daily 2026-11-29, weekly 2026-W48",
        f"remove  {name('sunday_early')}",
        f"remove  {name('october')}",
        "task 5: 3 kept, 2 would remove",
    ]
    assert sorted(path.name for path in backups.iterdir()) == before


def test_prune_without_dry_run_deletes_what_the_dry_run_marked_remove(tmp_path: Path) -> None:
    repo, state, backups = config_repo(tmp_path, {"within": "2d", "monthly": 6})
    dry = reconciler("prune", "5", "--dry-run", "--repo", repo, "--state", state)
    assert dry.returncode == 0, dry.stderr
    doomed = {line.split()[1] for line in dry.stdout.splitlines() if line.startswith("remove")}
    assert doomed == {name("sunday"), name("sunday_early")}

    result = reconciler("prune", "5", "--repo", repo, "--state", state)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "task 5: 3 kept, 2 removed"
    assert sorted(path.name for path in backups.iterdir()) == sorted(
        [
            name("newest"),
            name("monday"),
            name("october"),
            backup_name(55, None, TAKEN["october"], "tar.zst"),
            "README.txt",
        ]
    )
    again = reconciler("prune", "5", "--dry-run", "--repo", repo, "--state", state)
    assert "remove" not in again.stdout.replace("would remove", "")


def test_prune_of_an_unknown_task_is_one_clear_sentence(tmp_path: Path) -> None:
    repo, state, _ = config_repo(tmp_path, {"last": 1})
    result = reconciler("prune", "9", "--dry-run", "--repo", repo, "--state", state)
    assert result.returncode == 2
    assert (
        result.stderr.splitlines()[-1] == f"reconciler: task 9 is not in the config set at {repo}"
    )
