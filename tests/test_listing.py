"""`reconciler ls`: real backups over real SSH, listed from the destination without writing them
anywhere: every member with its type, size and mtime, in any stored format."""

from __future__ import annotations

import io
import json
import os
import tarfile
import unicodedata
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.listing import Entry, entry_of, list_backup
from reconciler.models import Compression, ResolvedTask
from reconciler.restore import RestoreError, tar_members
from reconciler.state.runs import RunRecord
from reconciler.types import RunStatus
from tests.runs import Harness, files_task, sftp_destination
from tests.servers import MariaDbServer, SshServer
from tests.test_cli import reconciler
from tests.test_restore import make_tree
from tests.test_verify import FORMATS, backed_up, config_set, mariadb_backed_up

Listed = tuple[str, str, int, int, str | None]


def tree_entries(source: Path) -> set[Listed]:
    """What the tar of `source` holds: (path, type, size, mtime in whole seconds, link target)."""
    found: set[Listed] = set()
    for path in [source, *source.rglob("*")]:
        name = str(path.relative_to(source.parent))
        info = path.lstat()
        if path.is_symlink():
            found.add((name, "link", 0, int(info.st_mtime), os.readlink(path)))
        elif path.is_dir():
            found.add((name, "dir", 0, int(info.st_mtime), None))
        else:
            found.add((name, "file", info.st_size, int(info.st_mtime), None))
    return found


def listed(task: ResolvedTask, harness: Harness, run: RunRecord | None = None) -> set[Listed]:
    entries: list[Entry] = []
    list_backup(task, run, emit=entries.append, secrets=harness.secrets)
    return {(e.path, e.kind, e.size, int(e.mtime.timestamp()), e.link) for e in entries}


@pytest.mark.parametrize(("compression", "encrypted"), FORMATS)
def test_ls_lists_exactly_the_members_of_a_backup_with_sizes_and_mtimes(
    sshd: SshServer, tmp_path: Path, compression: Compression, encrypted: bool
) -> None:
    task, harness, _, _ = backed_up(tmp_path, sshd, compression, encrypted)

    assert listed(task, harness) == tree_entries(tmp_path / "site")


def test_ls_reads_a_backup_on_an_sftp_destination(sshd: SshServer, tmp_path: Path) -> None:
    destination = sftp_destination(sshd, tmp_path / "remote", sshd.known_hosts)
    local = files_task(sshd, tmp_path / "unused", make_tree(tmp_path))
    task = local.model_copy(update={"destination": destination})
    harness = Harness(tmp_path)
    assert harness.run(task) is RunStatus.SUCCESSFUL

    assert listed(task, harness) == tree_entries(tmp_path / "site")


def test_ls_of_a_given_run_lists_that_runs_backup(sshd: SshServer, tmp_path: Path) -> None:
    task, harness, first, _ = backed_up(tmp_path, sshd, Compression.ZSTD, False)
    before = tree_entries(tmp_path / "site")
    (tmp_path / "site" / "added later.txt").write_text("new")
    harness.clock.advance(timedelta(hours=1))
    assert harness.run(task) is RunStatus.SUCCESSFUL

    assert listed(task, harness, first) == before
    assert ("site/added later.txt", "file", 3) in {entry[:3] for entry in listed(task, harness)}


def test_ls_of_a_damaged_backup_fails(sshd: SshServer, tmp_path: Path) -> None:
    task, harness, _, stored = backed_up(tmp_path, sshd, Compression.ZSTD, False)
    stored.write_bytes(stored.read_bytes()[: stored.stat().st_size // 2])

    with pytest.raises(RestoreError, match="damaged or incomplete"):
        listed(task, harness)


@pytest.mark.servers
def test_ls_of_a_dump_task_says_it_lists_files_backups(
    sshd: SshServer, mariadb: MariaDbServer, tmp_path: Path
) -> None:
    task, harness, _, _ = mariadb_backed_up(tmp_path, sshd, mariadb)

    with pytest.raises(RestoreError, match=f"ls lists the files of a files backup; task {task.id}"):
        listed(task, harness)


def member(name: str, **fields: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def test_a_line_has_fixed_columns_and_the_path_last() -> None:
    entry = entry_of(member("site/a b.txt", size=1234, mtime=1_764_468_005))

    assert entry.line() == f"file      {1234:>15}  2025-11-30T02:00:05Z  site/a b.txt"
    assert entry.line()[10:25].strip() == "1234"


def test_a_link_shows_its_target_and_a_folder_has_no_trailing_slash() -> None:
    link = entry_of(member("site/link", type=tarfile.SYMTYPE, linkname="text.txt"))
    folder = entry_of(member("site/nested/", type=tarfile.DIRTYPE, size=0))

    assert link.line().endswith("  site/link -> text.txt")
    assert (folder.kind, folder.path) == ("dir", "site/nested")


@given(st.text(min_size=1))
def test_a_line_is_one_line_whatever_the_name(name: str) -> None:
    line = entry_of(member(name, mtime=0)).line()

    assert line.splitlines() == [line]
    assert not [char for char in line if unicodedata.category(char) == "Cc"]


def test_json_keeps_the_name_as_it_is() -> None:
    entry = entry_of(member("site/odd\nname", size=3, mtime=0))

    assert json.loads(entry.json()) == {
        "path": "site/odd\nname",
        "type": "file",
        "size": 3,
        "mtime": "1970-01-01T00:00:00Z",
        "link": None,
    }


def test_a_tar_of_many_members_streams_through_without_keeping_them() -> None:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as archive:
        for number in range(2000):
            archive.addfile(member(f"d/{number}", mtime=0))
    data.seek(0)

    with tarfile.open(fileobj=data, mode="r|") as archive:
        seen = 0
        for _ in tar_members(archive):
            seen += 1
            assert len(archive.members) <= 1  # type: ignore[attr-defined]
    assert seen == 2000


def test_the_ls_command_prints_one_aligned_line_per_entry_and_json_on_request(
    tmp_path: Path, sshd: SshServer
) -> None:
    repo, state, _ = config_set(tmp_path, sshd)
    run = reconciler("run", "1", "--repo", repo, "--state", state)
    assert run.returncode == 0, run.stdout + run.stderr

    text = reconciler("ls", "1", "--repo", repo, "--state", state)
    as_json = reconciler("ls", "1", "--run", "1", "--json", "--repo", repo, "--state", state)

    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert sorted(line.split()[-1] for line in lines) == [
        "data",
        "data/a.txt",
        "data/nested",
        "data/nested/b.bin",
    ]
    assert {line.split()[0] for line in lines} == {"dir", "file"}
    assert "file                    6  " in next(line for line in lines if line.endswith("a.txt"))
    assert {line[49:] for line in lines} == {line.split()[-1] for line in lines}  # cut -c50-
    assert as_json.returncode == 0, as_json.stderr
    objects = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {o["path"]: o["size"] for o in objects}["data/nested/b.bin"] == 4000
    mtime = datetime.fromisoformat(objects[0]["mtime"])
    assert mtime.utcoffset() == timedelta(0)
    assert abs(mtime - datetime.now(UTC)) < timedelta(hours=1)


def test_the_ls_command_of_an_unknown_run_exits_2(tmp_path: Path, sshd: SshServer) -> None:
    repo, state, _ = config_set(tmp_path, sshd)

    result = reconciler("ls", "1", "--run", "99", "--repo", repo, "--state", state)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "reconciler: task 1 has no run 99"


@given(st.text(min_size=1).filter(lambda name: name.isprintable() and not name.endswith("/")))
def test_a_printable_name_is_shown_as_it_is_with_backslashes_doubled(name: str) -> None:
    line = entry_of(member(name, mtime=0)).line()

    assert line.endswith("  " + name.replace("\\", "\\\\"))
