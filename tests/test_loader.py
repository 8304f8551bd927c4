"""Reading a config set from the work tree: every file read once, nothing behind a link."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

from reconciler.documents import MAX_FILE_BYTES, SYMLINK_REASON
from reconciler.loader import parse_directory, read_directory
from tests import configset


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def config_set(tmp_path: Path) -> Path:
    root = tmp_path / "config"
    write(root, {**configset.base_files(), "tasks/1.yaml": configset.task(1)})
    return root


def test_every_yaml_file_is_read_and_hidden_ones_are_skipped(tmp_path: Path) -> None:
    root = config_set(tmp_path)
    write(root, {".github/ci.yaml": "on: push\n", "tasks/team/2.yml": configset.task(2)})
    contents, refused = read_directory(root)
    assert sorted(contents) == sorted([*configset.base_files(), "tasks/1.yaml", "tasks/team/2.yml"])
    assert refused == {}


def test_a_linked_file_is_refused_and_not_read(tmp_path: Path) -> None:
    root = config_set(tmp_path)
    secret = tmp_path / "shadow"
    secret.write_text("root-password-hash: x\n")
    (root / "tasks/shadow.yaml").symlink_to(secret)
    contents, refused = read_directory(root)
    assert "tasks/shadow.yaml" not in contents
    assert refused == {"tasks/shadow.yaml": SYMLINK_REASON}


def test_a_linked_folder_is_refused_and_nothing_in_it_is_read(tmp_path: Path) -> None:
    root = config_set(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere, {"9.yaml": configset.task(9)})
    (root / "tasks/shared").symlink_to(elsewhere)
    contents, refused = read_directory(root)
    assert not any(path.startswith("tasks/shared") for path in contents)
    assert refused == {"tasks/shared": SYMLINK_REASON}


def test_a_link_with_any_name_is_reported(tmp_path: Path) -> None:
    root = config_set(tmp_path)
    (root / "README").symlink_to("/etc/hostname")
    assert read_directory(root)[1] == {"README": SYMLINK_REASON}


def test_the_folder_named_by_the_user_may_be_a_link(tmp_path: Path) -> None:
    root = config_set(tmp_path)
    (tmp_path / "via-link").symlink_to(root)
    assert "tasks/1.yaml" in read_directory(tmp_path / "via-link")[0]


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    root = config_set(tmp_path)
    os.mkfifo(root / "tasks/pipe.yaml")
    contents, refused = read_directory(root)
    assert "tasks/pipe.yaml" not in contents
    assert refused["tasks/pipe.yaml"].startswith("not a regular file")


def test_a_file_over_the_size_limit_is_refused_without_being_read(tmp_path: Path) -> None:
    root = config_set(tmp_path)
    huge = root / "tasks/huge.yaml"
    with huge.open("wb") as file:
        file.truncate(64 * MAX_FILE_BYTES)  # sparse: 64 MiB that cost no disk
    tracemalloc.start()
    try:
        contents, refused = read_directory(root)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "tasks/huge.yaml" not in contents
    assert "over the limit of 1,048,576 bytes" in refused["tasks/huge.yaml"]
    assert peak < MAX_FILE_BYTES


def test_an_unreadable_file_is_reported_not_raised(tmp_path: Path) -> None:
    root = config_set(tmp_path)
    (root / "tasks/1.yaml").chmod(0)
    if os.access(root / "tasks/1.yaml", os.R_OK):  # root reads anything: nothing to test
        return
    assert read_directory(root)[1]["tasks/1.yaml"].startswith("cannot be read")


def test_parse_directory_reports_each_refused_file_as_a_config_error(tmp_path: Path) -> None:
    root = config_set(tmp_path)
    (root / "tasks/shadow.yaml").symlink_to("/etc/shadow")
    files = parse_directory(root)
    (error,) = files["tasks/shadow.yaml"].errors
    assert (error.path, error.line, error.message) == ("tasks/shadow.yaml", None, SYMLINK_REASON)
    assert files["tasks/1.yaml"].ok
