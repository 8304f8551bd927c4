"""Backup storage: the same contract for every destination type, then what is particular to each.

Every store is reached through `open_destination` exactly as the runner does.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reconciler.destinations import (
    DestinationError,
    DestinationStore,
    open_destination,
)
from reconciler.models import LocalDestination, SecretRef
from reconciler.retention import backup_name, backups_to_delete

T0 = datetime(2024, 5, 1, 3, 0, 0, tzinfo=UTC)


def no_secrets(ref: SecretRef) -> str:
    raise AssertionError(f"this destination needs no secret, asked for {ref}")


def local_destination(path: Path) -> LocalDestination:
    return LocalDestination(id=1, user_id=1, label="disk", type="local", path=str(path))


@pytest.fixture(params=["local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DestinationStore]:
    destination = local_destination(tmp_path / "backups")
    opened = open_destination(destination, no_secrets)
    try:
        yield opened
    finally:
        opened.close()


def put(store: DestinationStore, directory: str, name: str, data: bytes) -> None:
    writer = store.open_writer(directory, name)
    writer.write(data)
    writer.commit()


def read(store: DestinationStore, directory: str, name: str) -> bytes:
    with store.open_reader(directory, name) as stream:
        return stream.read()


def names(store: DestinationStore, directory: str) -> list[str]:
    return [backup.name for backup in store.list_backups(directory)]


# --- the contract -----------------------------------------------------------------------------


def test_a_committed_backup_is_listed_with_its_size(store: DestinationStore) -> None:
    before = datetime.now(UTC) - timedelta(minutes=5)
    put(store, "", "backup_1_20240501030000.tar.zst", b"x" * 1000)
    [stored] = store.list_backups("")
    assert (stored.name, stored.size) == ("backup_1_20240501030000.tar.zst", 1000)
    assert stored.modified > before
    assert stored.modified.tzinfo is not None


def test_a_backup_is_invisible_until_committed(store: DestinationStore) -> None:
    writer = store.open_writer("", "backup_1_20240501030000.tar.zst")
    writer.write(b"half of it")
    assert store.list_backups("") == []
    writer.commit()
    assert names(store, "") == ["backup_1_20240501030000.tar.zst"]


def test_an_aborted_backup_leaves_nothing_behind(store: DestinationStore) -> None:
    writer = store.open_writer("", "backup_1_20240501030000.tar.zst")
    writer.write(b"doomed")
    writer.abort()
    writer.abort()
    assert store.list_backups("") == []
    assert store.remove_partials("") == []


def test_abort_after_commit_keeps_the_backup(store: DestinationStore) -> None:
    writer = store.open_writer("", "backup_1_20240501030000.tar.zst")
    writer.write(b"kept")
    writer.commit()
    writer.abort()
    assert read(store, "", "backup_1_20240501030000.tar.zst") == b"kept"


def test_writing_after_commit_is_an_error(store: DestinationStore) -> None:
    writer = store.open_writer("", "backup_1_20240501030000.tar.zst")
    writer.commit()
    with pytest.raises(DestinationError, match="after commit"):
        writer.write(b"late")


def test_an_empty_backup_can_be_stored(store: DestinationStore) -> None:
    put(store, "", "backup_1_20240501030000.sql.zst", b"")
    assert read(store, "", "backup_1_20240501030000.sql.zst") == b""


def test_a_large_backup_streams_back_byte_for_byte(store: DestinationStore) -> None:
    chunk = os.urandom(1024 * 1024)
    digest = hashlib.sha256()
    writer = store.open_writer("big", "backup_1_20240501030000.tar.zst")
    for index in range(13):
        piece = chunk[index:] + chunk[:index]
        digest.update(piece)
        writer.write(piece)
    writer.commit()
    read_back = hashlib.sha256()
    with store.open_reader("big", "backup_1_20240501030000.tar.zst") as stream:
        while block := stream.read(256 * 1024):
            read_back.update(block)
    assert read_back.hexdigest() == digest.hexdigest()
    assert store.list_backups("big")[0].size == 13 * 1024 * 1024


def test_nested_directories_are_created_as_needed(store: DestinationStore) -> None:
    put(store, "hosts/web-1/", "backup_1_20240501030000.tar.zst", b"a")
    assert names(store, "hosts/web-1") == ["backup_1_20240501030000.tar.zst"]


def test_a_listing_holds_only_the_directory_itself(store: DestinationStore) -> None:
    put(store, "", "backup_1_20240501030000.tar.zst", b"root")
    put(store, "sub", "backup_2_20240501030000.tar.zst", b"sub")
    assert names(store, "") == ["backup_1_20240501030000.tar.zst"]
    assert names(store, "sub") == ["backup_2_20240501030000.tar.zst"]


def test_listing_a_directory_that_does_not_exist_is_empty(store: DestinationStore) -> None:
    assert store.list_backups("never/written") == []


def test_delete_removes_one_backup_and_tolerates_a_missing_one(store: DestinationStore) -> None:
    put(store, "", "backup_1_20240501030000.tar.zst", b"a")
    put(store, "", "backup_1_20240502030000.tar.zst", b"b")
    store.delete("", "backup_1_20240501030000.tar.zst")
    store.delete("", "backup_1_20240501030000.tar.zst")
    assert names(store, "") == ["backup_1_20240502030000.tar.zst"]


def test_reading_a_missing_backup_is_an_error(store: DestinationStore) -> None:
    with pytest.raises(DestinationError):
        read(store, "", "backup_1_20240501030000.tar.zst")


def test_remove_partials_clears_what_a_crashed_run_left(store: DestinationStore) -> None:
    crashed = store.open_writer("t", "backup_1_20240501030000.tar.zst")
    crashed.write(b"the daemon died here")
    put(store, "t", "backup_1_20240430030000.tar.zst", b"complete")
    assert store.remove_partials("t") == ["backup_1_20240501030000.tar.zst"]
    assert store.remove_partials("t") == []
    assert names(store, "t") == ["backup_1_20240430030000.tar.zst"]
    crashed.abort()  # releases the handle a dead process would have lost; must not fail


def test_rotation_over_a_real_listing_keeps_the_newest(store: DestinationStore) -> None:
    written = [backup_name(4, "db", T0 + timedelta(days=day), "sql.zst") for day in range(5)]
    for name in written:
        put(store, "db", name, name.encode())
    put(store, "db", "notes.txt", b"not ours")
    doomed = backups_to_delete(names(store, "db"), 4, "db", 2, keep=written[-1])
    for name in doomed:
        store.delete("db", name)
    assert names(store, "db") == sorted([*written[-2:], "notes.txt"])


@pytest.mark.parametrize(
    "directory", ["../outside", "/etc", "a/../../outside", "a\x00b", "a\\..\\b"]
)
def test_a_directory_that_could_escape_the_destination_is_refused(
    store: DestinationStore, directory: str
) -> None:
    with pytest.raises(DestinationError, match="storage path"):
        store.open_writer(directory, "backup_1_20240501030000.tar.zst")
    with pytest.raises(DestinationError, match="storage path"):
        store.list_backups(directory)


@pytest.mark.parametrize("name", ["", "..", "../x", "a/b", ".hidden", "x\x00y", "x\ny"])
def test_a_name_that_is_not_one_plain_file_name_is_refused(
    store: DestinationStore, name: str
) -> None:
    with pytest.raises(DestinationError, match="backup name"):
        store.open_writer("", name)
    with pytest.raises(DestinationError, match="backup name"):
        store.delete("", name)


# --- local ------------------------------------------------------------------------------------


def test_local_backups_are_readable_only_by_the_daemon_user(tmp_path: Path) -> None:
    store = open_destination(local_destination(tmp_path), no_secrets)
    put(store, "", "backup_1_20240501030000.tar.zst", b"secret data")
    assert (tmp_path / "backup_1_20240501030000.tar.zst").stat().st_mode & 0o077 == 0


def test_local_temporaries_are_hidden_files_next_to_the_backup(tmp_path: Path) -> None:
    store = open_destination(local_destination(tmp_path), no_secrets)
    writer = store.open_writer("", "backup_1_20240501030000.tar.zst")
    writer.write(b"partial")
    assert os.listdir(tmp_path) == [".backup_1_20240501030000.tar.zst.partial"]
    writer.abort()
    assert os.listdir(tmp_path) == []


def test_a_local_symlink_leading_out_of_the_destination_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    store = open_destination(local_destination(root), no_secrets)
    with pytest.raises(DestinationError, match="outside the destination"):
        store.open_writer("escape", "backup_1_20240501030000.tar.zst")
    assert os.listdir(outside) == []


def test_a_local_write_failure_is_a_destination_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where a directory should be")
    store = open_destination(local_destination(tmp_path), no_secrets)
    with pytest.raises(DestinationError, match="file"):
        store.open_writer("file/sub", "backup_1_20240501030000.tar.zst")
