"""Backups made by the runner over real SSH, restored and compared with the original."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reconciler.commands import BackupFormat
from reconciler.models import Compression, DatabaseEngine, SecretRef, Source, SourceType, Storage
from reconciler.restore import RestoreError, check_dump_complete, restore
from reconciler.types import RunStatus
from tests.runs import Harness, database_connection, files_task, make_task
from tests.servers import MariaDbServer, PostgresServer, SshServer
from tests.trees import same_tree


def make_tree(root: Path) -> Path:
    source = root / "site"
    (source / "nested" / "deeper").mkdir(parents=True)
    (source / "random.bin").write_bytes(os.urandom(3_000_000))
    (source / "text.txt").write_text("line\n" * 50_000)
    (source / "nested" / "deeper" / "empty").write_bytes(b"")
    (source / "nested" / "name with 'quotes' and $x").write_text("odd")
    os.symlink("text.txt", source / "link")
    return source


@pytest.mark.parametrize("compression", list(Compression))
@pytest.mark.parametrize("encrypted", [False, True])
def test_a_files_backup_round_trips_byte_for_byte(
    sshd: SshServer, tmp_path: Path, encrypted: bool, compression: Compression
) -> None:
    source = make_tree(tmp_path)
    extra = {"encryption_password": SecretRef(env="ENCRYPTION")} if encrypted else {}
    task = files_task(
        sshd, tmp_path / "dest", source, storage=Storage(compression=compression), **extra
    )
    harness = Harness(tmp_path)
    assert harness.run(task) is RunStatus.SUCCESSFUL
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    assert record.backup_name is not None
    compressed = compression is Compression.ZSTD
    form = BackupFormat(SourceType.FILES, compressed=compressed, encrypted=encrypted)
    assert record.backup_name.endswith(f".{form.extension}")
    restored = restore(task, run=record, to=tmp_path / "restored", secrets=harness.secrets)
    assert restored == tmp_path / "restored" / "site"
    assert same_tree(source, restored)
    assert os.readlink(restored / "link") == "text.txt"


@pytest.mark.parametrize("compression", list(Compression))
def test_a_damaged_backup_fails_to_restore_and_leaves_nothing(
    sshd: SshServer, tmp_path: Path, compression: Compression
) -> None:
    storage = Storage(compression=compression)
    task = files_task(sshd, tmp_path / "dest", make_tree(tmp_path), storage=storage)
    harness = Harness(tmp_path)
    assert harness.run(task) is RunStatus.SUCCESSFUL
    stored = next((tmp_path / "dest").iterdir())
    stored.write_bytes(stored.read_bytes()[: stored.stat().st_size // 2])
    target = tmp_path / "restored"
    with pytest.raises(RestoreError, match="damaged or incomplete"):
        restore(task, run=None, to=target, secrets=harness.secrets)
    assert list(target.iterdir()) == []


MARIADB_SCHEMA = """
CREATE DATABASE shop;
CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(50));
INSERT INTO shop.items VALUES (1, 'apple'), (2, 'pear; DROP TABLE x'), (3, 'o''brien');
CREATE TABLE shop.sessions (id INT PRIMARY KEY, token VARCHAR(50));
INSERT INTO shop.sessions VALUES (1, 'secret-session');
"""


@pytest.mark.servers
@pytest.mark.parametrize("compression", list(Compression))
def test_a_mariadb_backup_restores_into_an_empty_database(
    sshd: SshServer, mariadb: MariaDbServer, tmp_path: Path, compression: Compression
) -> None:
    mariadb.sql("DROP DATABASE IF EXISTS shop; DROP DATABASE IF EXISTS shop_restored;")
    mariadb.sql(MARIADB_SCHEMA)
    connection = database_connection(DatabaseEngine.MYSQL, mariadb.port, mariadb.username)
    source = Source(type=SourceType.DATABASE, database_name="shop", excluded_tables=("sessions",))
    task = make_task(
        sshd,
        tmp_path / "dest",
        source,
        database=connection,
        storage=Storage(compression=compression),
    )
    harness = Harness(tmp_path, {"DB_PASSWORD": mariadb.password})
    assert harness.run(task) is RunStatus.SUCCESSFUL
    dump = restore(task, run=None, to=tmp_path / "restored", secrets=harness.secrets)
    assert dump.suffix == ".sql"
    mariadb.sql("CREATE DATABASE shop_restored")
    with dump.open("rb") as sql:
        subprocess.run(
            ["mariadb", f"--socket={mariadb.socket}", "-uroot", "shop_restored"],
            stdin=sql,
            check=True,
        )
    rows = "SELECT id, name FROM items ORDER BY id"
    assert mariadb.sql(rows, "shop_restored") == mariadb.sql(rows, "shop")
    assert mariadb.sql("SHOW TABLES", "shop_restored").split() == ["items"]


@pytest.mark.servers
def test_an_uncompressed_dump_cut_short_fails_to_restore(
    sshd: SshServer, mariadb: MariaDbServer, tmp_path: Path
) -> None:
    mariadb.sql("DROP DATABASE IF EXISTS shop; DROP DATABASE IF EXISTS shop_restored;")
    mariadb.sql(MARIADB_SCHEMA)
    connection = database_connection(DatabaseEngine.MYSQL, mariadb.port, mariadb.username)
    source = Source(type=SourceType.DATABASE, database_name="shop")
    storage = Storage(compression=Compression.NONE)
    task = make_task(sshd, tmp_path / "dest", source, database=connection, storage=storage)
    harness = Harness(tmp_path, {"DB_PASSWORD": mariadb.password})
    assert harness.run(task) is RunStatus.SUCCESSFUL
    stored = next((tmp_path / "dest").iterdir())
    stored.write_bytes(stored.read_bytes()[: stored.stat().st_size - 100])
    target = tmp_path / "restored"
    with pytest.raises(RestoreError, match="closing comment"):
        restore(task, run=None, to=target, secrets=harness.secrets)
    assert list(target.iterdir()) == []


@pytest.mark.parametrize(
    "ending",
    [
        b"-- Dump completed on 2026-11-26 15:00:00\n",
        b"--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc123\n\n",
    ],
)
def test_a_dump_ending_with_its_tools_closing_comment_is_complete(
    tmp_path: Path, ending: bytes
) -> None:
    dump = tmp_path / "dump.sql"
    dump.write_bytes(b"INSERT INTO t VALUES (1);\n" * 1000 + ending)
    check_dump_complete(dump)


def test_a_dump_without_a_closing_comment_is_incomplete(tmp_path: Path) -> None:
    dump = tmp_path / "dump.sql"
    dump.write_bytes(b"-- MariaDB dump\nINSERT INTO t VALUES (1);\nINSERT INTO t VAL")
    with pytest.raises(RestoreError, match="damaged or incomplete"):
        check_dump_complete(dump)


@pytest.mark.servers
def test_a_postgresql_backup_restores_into_an_empty_database(
    sshd: SshServer, postgres: PostgresServer, tmp_path: Path
) -> None:
    postgres.sql("DROP DATABASE IF EXISTS shop")
    postgres.sql("DROP DATABASE IF EXISTS shop_restored")
    postgres.sql("CREATE DATABASE shop")
    postgres.sql(
        "CREATE TABLE items (id int PRIMARY KEY, name text);"
        "INSERT INTO items VALUES (1, 'apple'), (2, 'pear; DROP TABLE x'), (3, 'o''brien');"
        "CREATE TABLE sessions (id int PRIMARY KEY, token text);"
        "INSERT INTO sessions VALUES (1, 'secret-session');",
        "shop",
    )
    connection = database_connection(DatabaseEngine.POSTGRESQL, postgres.port, postgres.username)
    source = Source(type=SourceType.DATABASE, database_name="shop", excluded_tables=("sessions",))
    task = make_task(
        sshd,
        tmp_path / "dest",
        source,
        database=connection,
        encryption_password=SecretRef(env="ENCRYPTION"),
    )
    harness = Harness(tmp_path, {"DB_PASSWORD": postgres.password})
    assert harness.run(task) is RunStatus.SUCCESSFUL
    dump = restore(task, run=None, to=tmp_path / "restored", secrets=harness.secrets)
    postgres.sql("CREATE DATABASE shop_restored")
    subprocess.run(
        ["psql", "-h", str(postgres.socket_dir), "-p", str(postgres.port), "-U", "postgres",
         "-d", "shop_restored", "-v", "ON_ERROR_STOP=1", "-q", "-f", str(dump)],
        check=True, capture_output=True,
    )  # fmt: skip
    rows = "SELECT id, name FROM items ORDER BY id"
    assert postgres.sql(rows, "shop_restored") == postgres.sql(rows, "shop")
    tables = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    assert postgres.sql(tables, "shop_restored").split() == ["items"]
