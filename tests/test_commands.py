"""Remote backup commands: pure properties, then hostile names run for real over SSH."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.commands import (
    DETECT_ENGINE_COMMAND,
    BackupFormat,
    CommandError,
    choose_engine,
    make_compressor,
    make_files_backup,
    make_mysql_dump,
    make_postgres_dump,
)
from reconciler.executor import RemoteShell, SshTarget
from reconciler.models import (
    Compression,
    DatabaseConnection,
    DatabaseEngine,
    SecretRef,
    SourceType,
    Storage,
)
from tests.servers import MariaDbServer, SshServer

ZSTD = make_compressor(Storage())
HOSTILE = [
    "; touch {canary}",
    "$(touch {canary})",
    "`touch {canary}`",
    "'; touch {canary}; '",
    '"; touch {canary}; "',
    "a\nb; touch {canary}",
    "--checkpoint=1 --checkpoint-action=exec=touch {canary}",
    "-rf",
]


def shell_for(sshd: SshServer) -> RemoteShell:
    return RemoteShell(
        SshTarget(
            sshd.host,
            sshd.port,
            sshd.username,
            private_key=str(sshd.private_key),
            known_hosts=str(sshd.known_hosts),
        )
    )


def run_remote(sshd: SshServer, command: str, stdin: bytes = b"") -> tuple[int, bytes]:
    out: list[bytes] = []
    with shell_for(sshd) as shell:
        result = shell.stream(command, out.append, stdin=stdin, timeout=60)
    return result.exit_status, b"".join(out)


def untar(compressed: bytes) -> list[str]:
    raw = subprocess.run(["zstd", "-dc"], input=compressed, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(raw.stdout)) as archive:
        return archive.getnames()


@given(st.text(min_size=1).filter(lambda s: "\x00" not in s and "/" not in s))
def test_a_files_command_is_one_quoted_sh_word_whatever_the_name(name: str) -> None:
    command = make_files_backup(f"/srv/{name}", ZSTD).command
    assert command.startswith("sh -c '")
    assert command.endswith("'")


@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_source_paths_are_archived_literally_and_run_nothing(
    sshd: SshServer, tmp_path: Path, template: str
) -> None:
    canary = tmp_path / "pwned"
    source = tmp_path / template.format(canary=canary)
    source.mkdir(parents=True)
    (source / "file.txt").write_text("content")
    status, out = run_remote(sshd, make_files_backup(str(source), ZSTD).command)
    assert status == 0
    assert f"{source.name}/file.txt" in untar(out)
    assert not canary.exists()


def test_a_missing_source_path_fails_with_tars_status(sshd: SshServer, tmp_path: Path) -> None:
    status, _ = run_remote(sshd, make_files_backup(str(tmp_path / "missing"), ZSTD).command)
    assert status == 2


def test_without_compression_a_files_command_streams_a_plain_tar(
    sshd: SshServer, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "file.txt").write_text("content")
    plain = make_compressor(Storage(compression=Compression.NONE))
    status, out = run_remote(sshd, make_files_backup(str(tmp_path / "data"), plain).command)
    assert status == 0
    with tarfile.open(fileobj=io.BytesIO(out)) as archive:
        assert "data/file.txt" in archive.getnames()


def test_without_compression_a_failing_producer_still_fails_the_command(
    sshd: SshServer, tmp_path: Path
) -> None:
    command = make_files_backup(str(tmp_path / "missing"), None).command
    status, _ = run_remote(sshd, command)
    assert status == 2


def test_the_compression_level_reaches_zstd() -> None:
    assert make_compressor(Storage(compression_level=19)) == ("zstd", "-q", "-c", "-19")
    assert make_compressor(Storage(compression=Compression.NONE)) is None


@given(st.sampled_from(SourceType), st.booleans(), st.booleans())
def test_a_backup_format_is_read_back_from_its_own_extension(
    source_type: SourceType, compressed: bool, encrypted: bool
) -> None:
    form = BackupFormat(source_type, compressed, encrypted)
    assert BackupFormat.of(f"backup_1_20240501030000.{form.extension}") == form


def test_a_name_with_a_foreign_extension_has_no_backup_format() -> None:
    assert BackupFormat.of("backup_1_20240501030000.zip") is None
    assert BackupFormat.of("notes.txt.gpg") is None


@pytest.mark.servers
@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_database_and_table_names_run_nothing(
    sshd: SshServer, mariadb: MariaDbServer, tmp_path: Path, template: str
) -> None:
    canary = tmp_path / "pwned"
    hostile = template.format(canary=canary)
    connection = DatabaseConnection(
        engine=DatabaseEngine.MYSQL,
        host=mariadb.host,
        port=mariadb.port,
        username=mariadb.username,
        password=SecretRef(env="UNUSED"),
    )
    for command in (
        make_mysql_dump(connection, hostile, [hostile], ZSTD).command,
        make_postgres_dump(connection, hostile, [hostile], ZSTD).command,
    ):
        status, _ = run_remote(sshd, command, stdin=mariadb.password.encode() + b"\n")
        assert status != 0  # no such database; what matters is that nothing ran
    assert not canary.exists()


def test_the_database_password_is_never_part_of_the_command() -> None:
    connection = DatabaseConnection(
        host="127.0.0.1", port=3306, username="backup", password=SecretRef(env="DB_PASSWORD")
    )
    for make in (make_mysql_dump, make_postgres_dump):
        command = make(connection, "shop", ["sessions"], ZSTD)
        assert command.reads_password
        assert "DB_PASSWORD" not in command.command
        assert "--password" not in command.command


def test_a_dump_without_a_password_reads_no_stdin() -> None:
    assert not make_mysql_dump(DatabaseConnection(), "shop", [], ZSTD).reads_password


def test_excluded_tables_become_ignore_and_exclude_options() -> None:
    connection = DatabaseConnection()
    assert (
        "--ignore-table=shop.sessions"
        in make_mysql_dump(connection, "shop", ["sessions"], ZSTD).command
    )
    # pg_dump patterns are quoted so that a name never acts as a wildcard
    pg = make_postgres_dump(connection, "shop", ["Sess*", "audit.log"], ZSTD).command
    assert '--exclude-table="Sess*"' in pg.replace("'\"'\"'", "'")
    assert '"audit"."log"' in pg.replace("'\"'\"'", "'")


def test_a_declared_engine_wins_over_detection() -> None:
    declared = DatabaseConnection(engine=DatabaseEngine.POSTGRESQL)
    assert choose_engine(declared, "mysqldump\n") is DatabaseEngine.POSTGRESQL


@pytest.mark.parametrize(
    ("found", "engine"),
    [("mysqldump\n", DatabaseEngine.MYSQL), ("pg_dump\n", DatabaseEngine.POSTGRESQL)],
)
def test_the_only_installed_dump_tool_decides_the_engine(
    found: str, engine: DatabaseEngine
) -> None:
    assert choose_engine(DatabaseConnection(), found) is engine


def test_both_tools_installed_is_resolved_by_a_well_known_port_or_refused() -> None:
    both = "mysqldump\npg_dump\n"
    assert choose_engine(DatabaseConnection(port=5432), both) is DatabaseEngine.POSTGRESQL
    with pytest.raises(CommandError, match=r"set database\.engine"):
        choose_engine(DatabaseConnection(port=6000), both)


def test_no_dump_tool_installed_is_an_error() -> None:
    with pytest.raises(CommandError, match="neither"):
        choose_engine(DatabaseConnection(), "")


def test_detection_runs_on_the_remote(sshd: SshServer) -> None:
    status, out = run_remote(sshd, DETECT_ENGINE_COMMAND)
    assert status == 0
    assert set(out.decode().split()) == {"mysqldump", "pg_dump"}  # both installed on this host
