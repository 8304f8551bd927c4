"""`reconciler ls` and `restore --path` on a restic destination: real files backups over the real
test sshd into a real restic repository, listed and partly restored through `restic dump`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.models import ResolvedTask
from reconciler.restore import RestoreError, restore
from reconciler.types import RunStatus
from tests import configset
from tests.gitrepo import init_repo
from tests.runs import Harness, files_task, server_file
from tests.servers import MariaDbServer, SshServer
from tests.test_cli import reconciler
from tests.test_listing import Listed, listed, tree_entries
from tests.test_partial_restore import everything_under
from tests.test_restic import PASSWORD, harness, make_tree, mariadb_on_restic, on_restic
from tests.trees import same_tree


def on_restic_backed_up(tmp_path: Path, sshd: SshServer) -> tuple[ResolvedTask, Harness]:
    """A files task of `make_tree` backed up once into a new restic repository."""
    task = on_restic(files_task(sshd, tmp_path / "unused", make_tree(tmp_path)), tmp_path / "repo")
    rig = harness(tmp_path)
    assert rig.run(task) is RunStatus.SUCCESSFUL
    return task, rig


def test_ls_lists_the_members_of_a_restic_backup_with_their_sizes_and_mtimes(
    sshd: SshServer, tmp_path: Path
) -> None:
    task, rig = on_restic_backed_up(tmp_path, sshd)

    assert listed(task, rig) == tree_entries(tmp_path / "site")


def test_ls_of_an_older_run_on_restic_lists_that_runs_backup(
    sshd: SshServer, tmp_path: Path
) -> None:
    task, rig = on_restic_backed_up(tmp_path, sshd)
    first = rig.state.runs.latest_run(task.id)
    assert first is not None
    before = tree_entries(tmp_path / "site")
    (tmp_path / "site" / "nested" / "text.txt").write_text("shorter\n")
    rig.clock.advance(timedelta(hours=1))  # a new backup name, so a second snapshot
    assert rig.run(task) is RunStatus.SUCCESSFUL

    assert listed(task, rig, first) == before
    assert ("site/nested/text.txt", "file", 50_000) in {entry[:3] for entry in before}
    assert ("site/nested/text.txt", "file", 8) in {entry[:3] for entry in listed(task, rig)}


def test_a_folder_path_restores_only_that_folder_from_a_restic_backup(
    sshd: SshServer, tmp_path: Path
) -> None:
    task, rig = on_restic_backed_up(tmp_path, sshd)
    target = tmp_path / "restored"

    written = restore(task, run=None, to=target, secrets=rig.secrets, paths=["site/nested"])

    assert written == target / "site"
    assert everything_under(target) == ["site", "site/nested", "site/nested/text.txt"]
    assert same_tree(tmp_path / "site" / "nested", target / "site" / "nested")


def test_a_path_matching_nothing_in_a_restic_backup_is_named_and_nothing_is_written(
    sshd: SshServer, tmp_path: Path
) -> None:
    task, rig = on_restic_backed_up(tmp_path, sshd)
    target = tmp_path / "restored"

    with pytest.raises(RestoreError, match="not in the backup") as raised:
        restore(task, run=None, to=target, secrets=rig.secrets, paths=["site/missing"])

    assert str(raised.value).endswith("site/missing; nothing was restored")
    assert list(target.iterdir()) == []


@pytest.mark.servers
def test_ls_of_a_dump_task_on_restic_says_it_lists_files_backups(
    sshd: SshServer, mariadb: MariaDbServer, tmp_path: Path
) -> None:
    task, rig = mariadb_on_restic(sshd, mariadb, tmp_path)

    with pytest.raises(RestoreError, match=f"ls lists the files of a files backup; task {task.id}"):
        listed(task, rig)


def text_entry(line: str) -> Listed:
    """A line of `reconciler ls` as tree_entries names it (the names here have no spaces)."""
    kind, size, mtime, path = line.split()
    taken = datetime.strptime(mtime, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return (path, kind, int(size), int(taken.timestamp()), None)


def test_the_ls_command_lists_a_restic_backup_with_the_password_from_the_environment(
    sshd: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = make_tree(tmp_path, size=100_000)
    repo, state = tmp_path / "config", tmp_path / "state.db"
    files = {**configset.base_files(), "servers/one.yaml": server_file(sshd)}
    files["destinations/one.yaml"] = configset.dump(
        {
            "id": 1,
            "user_id": 1,
            "label": "vault",
            "type": "restic",
            "repository": str(tmp_path / "repo"),
            "password": {"env": "RESTIC_PW"},
        }
    )
    files["tasks/1.yaml"] = configset.task(1, source={"type": "files", "path": str(source)})
    init_repo(repo, files)
    monkeypatch.setenv("RESTIC_PW", PASSWORD)  # inherited by the reconciler processes
    run = reconciler("run", "1", "--repo", repo, "--state", state)
    assert run.returncode == 0, run.stdout + run.stderr

    result = reconciler("ls", "1", "--repo", repo, "--state", state)

    assert result.returncode == 0, result.stderr
    assert set(map(text_entry, result.stdout.splitlines())) == tree_entries(source)
