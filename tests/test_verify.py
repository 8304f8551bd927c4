"""`reconciler verify`: real backups over real SSH, read back through gpg, zstd and tar (or to a
dump's closing comment) without writing them anywhere; damage in any layer fails them."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
from pathlib import Path

import pytest

from reconciler.models import (
    Compression,
    DatabaseEngine,
    ResolvedTask,
    SecretRef,
    Source,
    SourceType,
    Storage,
)
from reconciler.state.runs import RunRecord
from reconciler.types import RunStatus
from reconciler.verify import verify
from tests import configset
from tests.gitrepo import init_repo
from tests.runs import (
    Harness,
    database_connection,
    files_task,
    make_task,
    server_file,
    sftp_destination,
)
from tests.servers import MariaDbServer, PostgresServer, SshServer
from tests.test_cli import reconciler, write
from tests.test_restore import MARIADB_SCHEMA, make_tree

# (compression, encrypted): plain, zstd, gpg (over zstd, as a task writes it by default)
FORMATS = [
    pytest.param(Compression.NONE, False, id="plain"),
    pytest.param(Compression.ZSTD, False, id="zstd"),
    pytest.param(Compression.ZSTD, True, id="gpg"),
]


def backed_up(
    tmp_path: Path, sshd: SshServer, compression: Compression, encrypted: bool
) -> tuple[ResolvedTask, Harness, RunRecord, Path]:
    """A files task backed up once: the task, its harness, the run and the stored file."""
    extra = {"encryption_password": SecretRef(env="ENCRYPTION")} if encrypted else {}
    storage = Storage(compression=compression)
    task = files_task(sshd, tmp_path / "dest", make_tree(tmp_path), storage=storage, **extra)
    harness = Harness(tmp_path)
    assert harness.run(task) is RunStatus.SUCCESSFUL
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    (stored,) = (tmp_path / "dest").iterdir()
    return task, harness, record, stored


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("compression", "encrypted"), FORMATS)
def test_a_fresh_files_backup_verifies(
    sshd: SshServer, tmp_path: Path, compression: Compression, encrypted: bool
) -> None:
    task, harness, record, stored = backed_up(tmp_path, sshd, compression, encrypted)

    result = verify(task, record, secrets=harness.secrets)

    assert result.problems == ()
    assert result.files == 4  # random.bin, text.txt, empty, the oddly named one; not the link
    assert result.summary() == (
        f"verified {stored.name} of task 1: 4 files,"
        f" {stored.stat().st_size / 1e6:,.1f} MB, sha256 ok"
    )


@pytest.mark.parametrize(("compression", "encrypted"), FORMATS)
def test_the_recorded_size_and_sha256_are_those_of_the_stored_file(
    sshd: SshServer, tmp_path: Path, compression: Compression, encrypted: bool
) -> None:
    _, _, record, stored = backed_up(tmp_path, sshd, compression, encrypted)

    sha256sum = subprocess.run(
        ["sha256sum", str(stored)], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    assert (record.size, record.sha256) == (stored.stat().st_size, sha256sum)


@pytest.mark.parametrize(("compression", "encrypted"), FORMATS)
def test_a_flipped_byte_in_the_stored_file_fails_verification(
    sshd: SshServer, tmp_path: Path, compression: Compression, encrypted: bool
) -> None:
    task, harness, record, stored = backed_up(tmp_path, sshd, compression, encrypted)
    flip_byte(stored, stored.stat().st_size // 2)

    result = verify(task, record, secrets=harness.secrets)

    assert "is not what run 1 recorded" in result.problems[0]
    assert result.summary().startswith(f"{stored.name} of task 1 failed verification: ")


@pytest.mark.parametrize(
    ("compression", "encrypted", "found"),
    [
        pytest.param(Compression.ZSTD, False, "zstd", id="zstd"),
        pytest.param(Compression.ZSTD, True, "decryption", id="gpg"),
    ],
)
def test_a_flipped_byte_fails_decryption_or_decompression_without_a_recorded_checksum(
    sshd: SshServer, tmp_path: Path, compression: Compression, encrypted: bool, found: str
) -> None:
    task, harness, record, stored = backed_up(tmp_path, sshd, compression, encrypted)
    flip_byte(stored, stored.stat().st_size // 2)
    unrecorded = dataclasses.replace(record, sha256=None)

    result = verify(task, unrecorded, secrets=harness.secrets)

    assert len(result.problems) == 1
    assert found in result.problems[0]


def test_a_backup_on_an_sftp_destination_is_verified_and_its_damage_found(
    sshd: SshServer, tmp_path: Path
) -> None:
    remote = tmp_path / "remote"
    destination = sftp_destination(sshd, remote, sshd.known_hosts)
    local = files_task(sshd, tmp_path / "unused", make_tree(tmp_path))
    task = local.model_copy(update={"destination": destination})
    harness = Harness(tmp_path)
    assert harness.run(task) is RunStatus.SUCCESSFUL
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    (stored,) = remote.iterdir()

    assert verify(task, record, secrets=harness.secrets).problems == ()
    flip_byte(stored, 1000)
    assert verify(task, record, secrets=harness.secrets).problems


def test_a_tar_cut_short_at_a_member_boundary_fails_without_a_recorded_checksum(
    sshd: SshServer, tmp_path: Path
) -> None:
    task, harness, record, stored = backed_up(tmp_path, sshd, Compression.NONE, False)
    # Drop the end-of-archive marker and padding: every member is whole, the archive is not.
    data = stored.read_bytes().rstrip(b"\0")
    stored.write_bytes(data + b"\0" * (-len(data) % 512))
    unrecorded = dataclasses.replace(record, sha256=None)

    result = verify(task, unrecorded, secrets=harness.secrets)

    assert result.problems
    assert "end-of-archive marker" in result.problems[0]


def test_a_backup_verified_without_a_recorded_checksum_says_so(
    sshd: SshServer, tmp_path: Path
) -> None:
    task, harness, record, _ = backed_up(tmp_path, sshd, Compression.ZSTD, False)

    result = verify(task, dataclasses.replace(record, sha256=None), secrets=harness.secrets)

    assert result.problems == ()
    assert result.summary().endswith("no sha256 recorded to compare")


def mariadb_backed_up(
    tmp_path: Path, sshd: SshServer, mariadb: MariaDbServer, schema: str | None = MARIADB_SCHEMA
) -> tuple[ResolvedTask, Harness, RunRecord, Path]:
    """The `shop` database (made from `schema`; None: as the caller made it) dumped once."""
    if schema is not None:
        mariadb.sql("DROP DATABASE IF EXISTS shop; DROP DATABASE IF EXISTS shop_restored;")
        mariadb.sql(schema)
    connection = database_connection(DatabaseEngine.MYSQL, mariadb.port, mariadb.username)
    source = Source(type=SourceType.DATABASE, database_name="shop")
    storage = Storage(compression=Compression.NONE)
    task = make_task(sshd, tmp_path / "dest", source, database=connection, storage=storage)
    harness = Harness(tmp_path, {"DB_PASSWORD": mariadb.password})
    assert harness.run(task) is RunStatus.SUCCESSFUL
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    (stored,) = (tmp_path / "dest").iterdir()
    return task, harness, record, stored


@pytest.mark.servers
def test_a_fresh_mariadb_dump_verifies(
    sshd: SshServer, mariadb: MariaDbServer, tmp_path: Path
) -> None:
    task, harness, record, stored = mariadb_backed_up(tmp_path, sshd, mariadb)

    result = verify(task, record, secrets=harness.secrets)

    assert result.problems == ()
    assert result.summary().startswith(f"verified {stored.name} of task 1: dump complete, ")
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == record.sha256


@pytest.mark.servers
def test_a_truncated_dump_fails_verification_by_its_missing_closing_comment(
    sshd: SshServer, mariadb: MariaDbServer, tmp_path: Path
) -> None:
    task, harness, record, stored = mariadb_backed_up(tmp_path, sshd, mariadb)
    stored.write_bytes(stored.read_bytes()[: stored.stat().st_size - 100])
    unrecorded = dataclasses.replace(record, sha256=None)

    result = verify(task, unrecorded, secrets=harness.secrets)

    assert len(result.problems) == 1
    assert "closing comment" in result.problems[0]


def postgres_backed_up(
    tmp_path: Path, sshd: SshServer, postgres: PostgresServer, compression: Compression
) -> tuple[ResolvedTask, Harness, RunRecord, Path]:
    """A PostgreSQL dump task backed up once: the task, its harness, the run, the stored file."""
    postgres.sql("DROP DATABASE IF EXISTS verified")
    postgres.sql("CREATE DATABASE verified")
    postgres.sql(
        "CREATE TABLE items (id int PRIMARY KEY, name text);"
        "INSERT INTO items SELECT n, 'item ' || n FROM generate_series(1, 500) AS n;",
        "verified",
    )
    connection = database_connection(DatabaseEngine.POSTGRESQL, postgres.port, postgres.username)
    source = Source(type=SourceType.DATABASE, database_name="verified")
    storage = Storage(compression=compression)
    task = make_task(sshd, tmp_path / "dest", source, database=connection, storage=storage)
    harness = Harness(tmp_path, {"DB_PASSWORD": postgres.password})
    assert harness.run(task) is RunStatus.SUCCESSFUL
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    (stored,) = (tmp_path / "dest").iterdir()
    return task, harness, record, stored


POSTGRES_FORMATS = [
    pytest.param(Compression.NONE, id="plain"),
    pytest.param(Compression.ZSTD, id="zstd"),
]


@pytest.mark.servers
@pytest.mark.parametrize("compression", POSTGRES_FORMATS)
def test_a_fresh_postgresql_dump_verifies(
    sshd: SshServer, postgres: PostgresServer, tmp_path: Path, compression: Compression
) -> None:
    task, harness, record, stored = postgres_backed_up(tmp_path, sshd, postgres, compression)

    result = verify(task, record, secrets=harness.secrets)

    assert result.problems == ()
    assert result.summary().startswith(f"verified {stored.name} of task 1: dump complete, ")


@pytest.mark.servers
@pytest.mark.parametrize("compression", POSTGRES_FORMATS)
def test_a_flipped_byte_in_a_postgresql_dump_fails_verification(
    sshd: SshServer, postgres: PostgresServer, tmp_path: Path, compression: Compression
) -> None:
    task, harness, record, stored = postgres_backed_up(tmp_path, sshd, postgres, compression)
    flip_byte(stored, stored.stat().st_size // 2)

    result = verify(task, record, secrets=harness.secrets)

    assert "is not what run 1 recorded" in result.problems[0]


@pytest.mark.servers
def test_a_flipped_byte_in_a_zstd_postgresql_dump_fails_without_a_recorded_checksum(
    sshd: SshServer, postgres: PostgresServer, tmp_path: Path
) -> None:
    task, harness, record, stored = postgres_backed_up(tmp_path, sshd, postgres, Compression.ZSTD)
    flip_byte(stored, stored.stat().st_size // 2)
    unrecorded = dataclasses.replace(record, sha256=None)

    result = verify(task, unrecorded, secrets=harness.secrets)

    assert len(result.problems) == 1
    assert "zstd" in result.problems[0]


@pytest.mark.servers
def test_a_postgresql_dump_cut_short_fails_by_its_missing_closing_comment(
    sshd: SshServer, postgres: PostgresServer, tmp_path: Path
) -> None:
    task, harness, record, stored = postgres_backed_up(tmp_path, sshd, postgres, Compression.NONE)
    stored.write_bytes(stored.read_bytes()[: stored.stat().st_size - 100])
    unrecorded = dataclasses.replace(record, sha256=None)

    result = verify(task, unrecorded, secrets=harness.secrets)

    assert len(result.problems) == 1
    assert "closing comment" in result.problems[0]


def config_set(tmp_path: Path, sshd: SshServer) -> tuple[Path, Path, Path]:
    """A config set with files task 1 (zstd, no encryption) and its state: repo, state, backups."""
    source = tmp_path / "data"
    write(source, {"a.txt": "alpha\n", "nested/b.bin": "beta" * 1000})
    repo, state, backups = tmp_path / "config", tmp_path / "state.db", tmp_path / "backups"
    files = {**configset.base_files(), "servers/one.yaml": server_file(sshd)}
    files["destinations/one.yaml"] = configset.destination(1, 1, path=str(backups))
    files["tasks/1.yaml"] = configset.task(1, source={"type": "files", "path": str(source)})
    init_repo(repo, files)
    return repo, state, backups


def test_the_verify_command_exits_0_with_a_summary_and_1_on_a_flipped_byte(
    tmp_path: Path, sshd: SshServer
) -> None:
    repo, state, backups = config_set(tmp_path, sshd)
    run = reconciler("run", "1", "--repo", repo, "--state", state)
    assert run.returncode == 0, run.stdout + run.stderr
    (stored,) = backups.iterdir()

    verified = reconciler("verify", "1", "--repo", repo, "--state", state)
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout == (
        f"verified {stored.name} of task 1: 2 files,"
        f" {stored.stat().st_size / 1e6:,.1f} MB, sha256 ok\n"
    )

    flip_byte(stored, stored.stat().st_size // 2)
    failed = reconciler("verify", "1", "--run", "1", "--repo", repo, "--state", state)
    assert failed.returncode == 1
    assert failed.stdout == ""
    assert f"{stored.name} of task 1 failed verification: " in failed.stderr


def test_verify_of_an_unknown_run_says_so_and_exits_2(tmp_path: Path, sshd: SshServer) -> None:
    repo, state, _ = config_set(tmp_path, sshd)

    result = reconciler("verify", "1", "--run", "99", "--repo", repo, "--state", state)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "reconciler: task 1 has no run 99"


def test_verify_of_a_task_without_backups_says_so_and_exits_2(
    tmp_path: Path, sshd: SshServer
) -> None:
    repo, state, _ = config_set(tmp_path, sshd)

    result = reconciler("verify", "1", "--repo", repo, "--state", state)

    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "reconciler: task 1 has no successful backup run to verify"
    )
