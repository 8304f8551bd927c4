"""Backup storage: the same contract for every destination type, then what is particular to each.

Every store is reached through `open_destination` exactly as the runner does.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import boto3
import pytest

from reconciler.destinations import DestinationError, DestinationStore, open_destination
from reconciler.destinations.local import WRITEBACK_EVERY
from reconciler.models import LocalDestination, S3Destination, SecretRef
from reconciler.retention import Policy, backup_name, decide
from tests import s3server
from tests.runs import impostor_known_hosts, sftp_destination
from tests.servers import SshServer

T0 = datetime(2024, 5, 1, 3, 0, 0, tzinfo=UTC)


def no_secrets(ref: SecretRef) -> str:
    raise AssertionError(f"this destination needs no secret, asked for {ref}")


def local_destination(path: Path) -> LocalDestination:
    return LocalDestination(id=1, user_id=1, label="disk", type="local", path=str(path))


S3_SECRETS = {
    "s3-key-id": s3server.ACCESS_KEY_ID,
    "s3-secret-key": s3server.SECRET_ACCESS_KEY,
}


def s3_secrets(ref: SecretRef) -> str:
    assert ref.secret is not None
    return S3_SECRETS[ref.secret]


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    with s3server.running_moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def s3_admin(moto_endpoint: str) -> Iterator[Any]:
    """A plain boto3 client to arrange and inspect the bucket behind the store's back."""
    session = boto3.session.Session(
        aws_access_key_id=s3server.ACCESS_KEY_ID,
        aws_secret_access_key=s3server.SECRET_ACCESS_KEY,
        region_name=s3server.REGION,
    )
    client = session.client("s3", endpoint_url=moto_endpoint)
    yield client
    client.close()


@pytest.fixture
def bucket(s3_admin: Any) -> str:
    """A fresh bucket per test on the shared server."""
    name = f"t-{uuid.uuid4().hex[:24]}"
    s3_admin.create_bucket(Bucket=name)
    return name


def s3_destination(endpoint: str, bucket: str, prefix: str = "reconciler/") -> S3Destination:
    return S3Destination(
        id=2,
        user_id=1,
        label="objects",
        type="s3",
        bucket=bucket,
        prefix=prefix,
        endpoint_url=endpoint,
        region=s3server.REGION,
        access_key_id=SecretRef(secret="s3-key-id"),
        secret_access_key=SecretRef(secret="s3-secret-key"),
    )


@pytest.fixture(params=["local", "sftp", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DestinationStore]:
    if request.param == "local":
        opened = open_destination(local_destination(tmp_path / "backups"), no_secrets)
    elif request.param == "sftp":
        sshd = request.getfixturevalue("sshd")
        opened = open_destination(
            sftp_destination(sshd, tmp_path / "remote", sshd.known_hosts), no_secrets
        )
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        destination = s3_destination(endpoint, request.getfixturevalue("bucket"))
        # Parts of the smallest size S3 accepts, so that the large backup below has several.
        opened = open_destination(destination, s3_secrets, s3_part_size=5 * 1024 * 1024)
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
    assert not store.remove_partial("", "backup_1_20240501030000.tar.zst")


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


def test_remove_partial_clears_what_a_crashed_run_left(store: DestinationStore) -> None:
    crashed = store.open_writer("t", "backup_1_20240501030000.tar.zst")
    crashed.write(b"x" * (5 * 1024 * 1024))  # more than one S3 part: the upload has begun
    running = store.open_writer("t", "backup_2_20240501030000.tar.zst")
    running.write(b"y" * (5 * 1024 * 1024))
    put(store, "t", "backup_1_20240430030000.tar.zst", b"complete")
    assert store.remove_partial("t", "backup_1_20240501030000.tar.zst")
    assert not store.remove_partial("t", "backup_1_20240501030000.tar.zst")
    assert not store.remove_partial("missing", "backup_1_20240501030000.tar.zst")
    running.commit()  # another run's temporary was left alone
    assert names(store, "t") == [
        "backup_1_20240430030000.tar.zst",
        "backup_2_20240501030000.tar.zst",
    ]
    crashed.abort()  # releases the handle a dead process would have lost; must not fail


def test_rotation_over_a_real_listing_keeps_the_newest(store: DestinationStore) -> None:
    written = [backup_name(4, "db", T0 + timedelta(days=day), "sql.zst") for day in range(5)]
    for name in written:
        put(store, "db", name, name.encode())
    put(store, "db", "notes.txt", b"not ours")
    decisions = decide(names(store, "db"), 4, "db", Policy(last=2), ZoneInfo("UTC"))
    for decision in decisions:
        if not decision.keep:
            store.delete("db", decision.name)
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


# A fresh interpreter, so that what this test process has already imported (boto3, for the S3
# fixtures) cannot hide an import.
_OPEN_A_LOCAL_DESTINATION = """
import sys
from reconciler.destinations import open_destination
from reconciler.models import LocalDestination

store = open_destination(
    LocalDestination(id=1, user_id=1, label="disk", type="local", path=sys.argv[1]),
    lambda ref: "",
)
writer = store.open_writer("", "backup_1_20240501030000.tar.zst")
writer.write(b"data")
writer.commit()
store.close()
print(sorted({name.split(".")[0] for name in sys.modules} & {"boto3", "botocore"}))
"""


def test_a_local_destination_is_used_without_importing_boto3(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _OPEN_A_LOCAL_DESTINATION, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"
    assert (tmp_path / "backup_1_20240501030000.tar.zst").read_bytes() == b"data"


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


def test_a_local_backup_spanning_several_writeback_steps_is_stored_whole(tmp_path: Path) -> None:
    store = open_destination(local_destination(tmp_path), no_secrets)
    piece = os.urandom(3 << 20)
    pieces = 2 * WRITEBACK_EVERY // len(piece) + 3
    writer = store.open_writer("", "backup_1_20240501030000.tar.zst")
    for _ in range(pieces):
        writer.write(piece)
    writer.commit()
    stored = (tmp_path / "backup_1_20240501030000.tar.zst").read_bytes()
    assert stored == piece * pieces


def test_a_local_write_failure_is_a_destination_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where a directory should be")
    store = open_destination(local_destination(tmp_path), no_secrets)
    with pytest.raises(DestinationError, match="file"):
        store.open_writer("file/sub", "backup_1_20240501030000.tar.zst")


# --- sftp -------------------------------------------------------------------------------------


def test_sftp_writes_through_a_hidden_temporary_renamed_on_commit(
    sshd: SshServer, tmp_path: Path
) -> None:
    store = open_destination(
        sftp_destination(sshd, tmp_path / "remote", sshd.known_hosts), no_secrets
    )
    writer = store.open_writer("d", "backup_1_20240501030000.tar.zst")
    writer.write(b"on the other host")
    assert os.listdir(tmp_path / "remote" / "d") == [".backup_1_20240501030000.tar.zst.partial"]
    writer.commit()
    store.close()
    final = tmp_path / "remote" / "d" / "backup_1_20240501030000.tar.zst"
    assert final.read_bytes() == b"on the other host"
    assert final.stat().st_mode & 0o077 == 0


def test_sftp_refuses_a_host_missing_from_known_hosts(sshd: SshServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.touch()
    with pytest.raises(DestinationError, match="accept_new_host_keys"):
        open_destination(sftp_destination(sshd, tmp_path / "remote", empty), no_secrets)
    assert empty.read_text() == ""


def test_sftp_accepts_and_remembers_a_new_host_when_told_to(
    sshd: SshServer, tmp_path: Path
) -> None:
    known_hosts = tmp_path / "ssh" / "known_hosts"
    destination = sftp_destination(sshd, tmp_path / "remote", known_hosts, accept_new=True)
    open_destination(destination, no_secrets).close()
    assert known_hosts.read_text() == f"[{sshd.host}]:{sshd.port} {sshd.host_key_line}\n"
    # Remembered: a second connection needs no acceptance.
    refusing = sftp_destination(sshd, tmp_path / "remote", known_hosts, accept_new=False)
    open_destination(refusing, no_secrets).close()


def test_sftp_refuses_a_changed_host_key_even_when_accepting_new_ones(
    sshd: SshServer, tmp_path: Path
) -> None:
    known_hosts = impostor_known_hosts(sshd, tmp_path)
    destination = sftp_destination(sshd, tmp_path / "remote", known_hosts, accept_new=True)
    with pytest.raises(DestinationError, match="does not match"):
        open_destination(destination, no_secrets)


def test_an_unreachable_sftp_host_is_a_destination_error(sshd: SshServer, tmp_path: Path) -> None:
    destination = sftp_destination(sshd, tmp_path, sshd.known_hosts).model_copy(update={"port": 9})
    with pytest.raises(DestinationError, match=r"sftp://root@127\.0\.0\.1:9\b"):
        open_destination(destination, no_secrets)


# --- s3 ---------------------------------------------------------------------------------------


def s3_keys(s3_admin: Any, bucket: str) -> list[str]:
    listing = s3_admin.list_objects_v2(Bucket=bucket)
    return sorted(obj["Key"] for obj in listing.get("Contents", []))


def test_s3_listing_sees_every_page(moto_endpoint: str, bucket: str) -> None:
    store = open_destination(s3_destination(moto_endpoint, bucket), s3_secrets, s3_page_size=2)
    written = [backup_name(1, None, T0 + timedelta(hours=hour), "tar.zst") for hour in range(7)]
    for name in written:
        put(store, "", name, b"x")
    assert names(store, "") == written
    decisions = decide(names(store, ""), 1, None, Policy(last=2), ZoneInfo("UTC"))
    assert [decision.name for decision in decisions if not decision.keep] == written[4::-1]


def test_s3_keys_live_under_the_prefix_and_directory(
    moto_endpoint: str, bucket: str, s3_admin: Any
) -> None:
    store = open_destination(s3_destination(moto_endpoint, bucket, "/team/a/"), s3_secrets)
    put(store, "db", "backup_1_20240501030000.sql.zst", b"x")
    assert s3_keys(s3_admin, bucket) == ["team/a/db/backup_1_20240501030000.sql.zst"]


def test_s3_listing_ignores_objects_outside_the_prefix(
    moto_endpoint: str, bucket: str, s3_admin: Any
) -> None:
    s3_admin.put_object(Bucket=bucket, Key="backup_1_20240501030000.tar.zst", Body=b"no prefix")
    s3_admin.put_object(Bucket=bucket, Key="reconciler2/backup_1_20240501030000.tar.zst", Body=b"")
    store = open_destination(s3_destination(moto_endpoint, bucket, "reconciler"), s3_secrets)
    assert store.list_backups("") == []


def test_an_s3_backup_larger_than_a_part_is_a_multipart_upload_until_committed(
    moto_endpoint: str, bucket: str, s3_admin: Any
) -> None:
    store = open_destination(
        s3_destination(moto_endpoint, bucket), s3_secrets, s3_part_size=5 * 1024 * 1024
    )
    writer = store.open_writer("", "backup_1_20240501030000.tar.zst")
    writer.write(os.urandom(6 * 1024 * 1024))
    [upload] = s3_admin.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert upload["Key"] == "reconciler/backup_1_20240501030000.tar.zst"
    assert s3_keys(s3_admin, bucket) == []
    writer.abort()
    assert s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_s3_credentials_come_from_secret_references(moto_endpoint: str, bucket: str) -> None:
    asked: list[SecretRef] = []

    def recording(ref: SecretRef) -> str:
        asked.append(ref)
        return s3_secrets(ref)

    open_destination(s3_destination(moto_endpoint, bucket), recording).close()
    assert asked == [SecretRef(secret="s3-key-id"), SecretRef(secret="s3-secret-key")]


def test_an_s3_prefix_that_could_escape_is_refused(moto_endpoint: str, bucket: str) -> None:
    with pytest.raises(DestinationError, match="s3 prefix"):
        open_destination(s3_destination(moto_endpoint, bucket, "a/../.."), s3_secrets)


def test_an_unreachable_s3_endpoint_is_a_destination_error(bucket: str) -> None:
    closed = s3_destination("http://127.0.0.1:9", bucket)
    store = open_destination(closed, s3_secrets)
    with pytest.raises(DestinationError, match="listing s3://"):
        store.list_backups("")
