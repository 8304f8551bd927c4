"""`reconciler restore --path`: only the chosen files and folders of a real backup, restored the way
a whole restore is (staging, then moved into place), and nothing at all when a path is refused or
matches nothing."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.models import Compression
from reconciler.restore import RestoreError, member_path, restore
from reconciler.retention import backup_name
from tests.runs import Harness, files_task
from tests.servers import MariaDbServer, SshServer
from tests.test_cli import reconciler
from tests.test_verify import FORMATS, backed_up, config_set, mariadb_backed_up
from tests.trees import same_tree


def everything_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.mark.parametrize(("compression", "encrypted"), FORMATS)
def test_a_folder_path_restores_everything_under_it_and_nothing_else(
    sshd: SshServer, tmp_path: Path, compression: Compression, encrypted: bool
) -> None:
    task, harness, _, _ = backed_up(tmp_path, sshd, compression, encrypted)
    target = tmp_path / "restored"

    written = restore(task, run=None, to=target, secrets=harness.secrets, paths=["site/nested"])

    assert written == target / "site"
    assert everything_under(target) == [
        "site",
        "site/nested",
        "site/nested/deeper",
        "site/nested/deeper/empty",
        "site/nested/name with 'quotes' and $x",
    ]
    assert same_tree(tmp_path / "site" / "nested", target / "site" / "nested")


def test_a_file_path_restores_that_file(sshd: SshServer, tmp_path: Path) -> None:
    task, harness, _, _ = backed_up(tmp_path, sshd, Compression.ZSTD, False)
    target = tmp_path / "restored"

    restore(task, run=None, to=target, secrets=harness.secrets, paths=["site/text.txt"])

    assert everything_under(target) == ["site", "site/text.txt"]
    assert (target / "site/text.txt").read_bytes() == (tmp_path / "site/text.txt").read_bytes()


def test_several_paths_restore_each_of_them(sshd: SshServer, tmp_path: Path) -> None:
    task, harness, _, _ = backed_up(tmp_path, sshd, Compression.ZSTD, False)
    target = tmp_path / "restored"
    paths = ["site/link", "site/nested/deeper", "site/random.bin"]

    restore(task, run=None, to=target, secrets=harness.secrets, paths=paths)

    assert everything_under(target) == [
        "site",
        "site/link",
        "site/nested",
        "site/nested/deeper",
        "site/nested/deeper/empty",
        "site/random.bin",
    ]
    assert os.readlink(target / "site/link") == "text.txt"


def test_a_path_with_a_dot_slash_prefix_and_a_trailing_slash_is_accepted(
    sshd: SshServer, tmp_path: Path
) -> None:
    task, harness, _, _ = backed_up(tmp_path, sshd, Compression.NONE, False)
    target = tmp_path / "restored"

    restore(task, run=None, to=target, secrets=harness.secrets, paths=["./site//nested/deeper/"])

    assert everything_under(target) == [
        "site",
        "site/nested",
        "site/nested/deeper",
        "site/nested/deeper/empty",
    ]


@pytest.mark.parametrize(
    "paths",
    [
        ["site/missing"],
        ["site/text.txt", "site/missing"],
        ["site/*.txt"],  # taken as written, never as a pattern
        ["sit"],
    ],
)
def test_a_path_matching_nothing_is_named_and_nothing_is_written(
    sshd: SshServer, tmp_path: Path, paths: list[str]
) -> None:
    task, harness, _, _ = backed_up(tmp_path, sshd, Compression.ZSTD, False)
    target = tmp_path / "restored"

    with pytest.raises(RestoreError, match="not in the backup") as raised:
        restore(task, run=None, to=target, secrets=harness.secrets, paths=paths)

    assert str(raised.value).endswith(f"{paths[-1]}; nothing was restored")
    assert list(target.iterdir()) == []


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/etc/passwd", "is absolute"),
        ("site/../../etc", "contains '..'"),
        ("..", "contains '..'"),
        ("site/a\0b", "contains a NUL byte"),
        ("", "names no file or folder"),
        ("./", "names no file or folder"),
    ],
)
def test_a_hostile_path_is_refused_before_anything_is_read_or_written(
    sshd: SshServer, tmp_path: Path, path: str, why: str
) -> None:
    task, harness, _, _ = backed_up(tmp_path, sshd, Compression.ZSTD, False)
    target = tmp_path / "restored"

    with pytest.raises(RestoreError, match=why):
        restore(task, run=None, to=target, secrets=harness.secrets, paths=["site/text.txt", path])

    assert not target.exists()


def test_a_target_already_holding_the_restored_folder_is_refused_and_left_alone(
    sshd: SshServer, tmp_path: Path
) -> None:
    task, harness, _, _ = backed_up(tmp_path, sshd, Compression.ZSTD, False)
    target = tmp_path / "restored"
    (target / "site").mkdir(parents=True)
    (target / "site" / "mine.txt").write_text("keep me")

    with pytest.raises(RestoreError, match="restore into an empty directory"):
        restore(task, run=None, to=target, secrets=harness.secrets, paths=["site/text.txt"])

    assert everything_under(target) == ["site", "site/mine.txt"]


@pytest.mark.servers
def test_a_path_on_a_dump_task_is_refused(
    sshd: SshServer, mariadb: MariaDbServer, tmp_path: Path
) -> None:
    task, harness, _, _ = mariadb_backed_up(tmp_path, sshd, mariadb)
    target = tmp_path / "restored"

    with pytest.raises(RestoreError, match="--path selects files of a files backup"):
        restore(task, run=None, to=target, secrets=harness.secrets, paths=["shop"])

    assert not target.exists()


_components = st.sampled_from(["a", "b c", "-x", ".hidden", "...", "é", "", ".", "\\0"])


@given(st.lists(_components, min_size=1, max_size=6), st.booleans(), st.booleans())
def test_a_member_path_is_relative_normalised_and_stable(
    parts: list[str], dot_prefix: bool, trailing_slash: bool
) -> None:
    text = ("./" if dot_prefix else "") + "/".join(parts) + ("/" if trailing_slash else "")
    try:
        member = member_path(text)
    except RestoreError:
        assert text.startswith("/") or all(part in ("", ".") for part in parts)
        return
    assert member == "/".join(part for part in parts if part not in ("", "."))
    assert member_path(member) == member


def test_the_restore_command_restores_the_given_paths_and_exits_2_on_one_that_is_missing(
    tmp_path: Path, sshd: SshServer
) -> None:
    repo, state, _ = config_set(tmp_path, sshd)
    run = reconciler("run", "1", "--repo", repo, "--state", state)
    assert run.returncode == 0, run.stdout + run.stderr
    target, empty = tmp_path / "restored", tmp_path / "empty"

    done = reconciler(
        "restore", "1", "--path", "data/a.txt", "--to", target, "--repo", repo, "--state", state
    )
    missing = reconciler(
        "restore", "1", "--path", "data/zzz", "--to", empty, "--repo", repo, "--state", state
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"restored task 1 to {target / 'data'}\n"
    assert everything_under(target) == ["data", "data/a.txt"]
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("reconciler: not in the backup ")
    assert missing.stderr.strip().endswith(": data/zzz; nothing was restored")
    assert list(empty.iterdir()) == []


def test_a_path_in_a_backup_of_the_root_matches_its_dot_slash_members(
    sshd: SshServer, tmp_path: Path
) -> None:
    # A backup of `/` holds `./etc/...`; made here as the remote's tar makes it, from a small tree.
    root, dest = tmp_path / "root", tmp_path / "dest"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("host.example.com\n")
    (root / "srv").mkdir()
    dest.mkdir()
    task = files_task(sshd, dest, Path("/"))
    name = backup_name(task.id, None, datetime(2026, 12, 1, 2, 0, tzinfo=UTC), "tar")
    subprocess.run(["tar", "-C", str(root), "-cf", str(dest / name), "--", "."], check=True)
    target = tmp_path / "restored"

    restore(task, run=None, to=target, secrets=Harness(tmp_path).secrets, paths=["etc/hostname"])

    assert everything_under(target) == ["etc", "etc/hostname"]
