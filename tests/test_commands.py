"""Remote backup commands: pure properties, then hostile names run for real over SSH."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
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
    "\\0",  # GNU tar would read it as a NUL, an empty name
    "tab\\there\\\\",
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


def plain_names(archive: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as opened:
        return opened.getnames()


def untar(compressed: bytes) -> list[str]:
    raw = subprocess.run(["zstd", "-dc"], input=compressed, capture_output=True, check=True)
    return plain_names(raw.stdout)


# What a login shell reads: `sh -c '...'` around text with no `'` and no backslash, which is how
# dash, bash, zsh, fish and csh all read single quotes.
LOGIN_SHELL_LINE = re.compile(
    r"sh -c 'reconciler_script=\$\(echo ([A-Za-z0-9+/=]+) \| base64 -d\) "
    r"&& eval \"\$reconciler_script\"'"
)
LOGIN_SHELLS = ("dash", "bash", "zsh", "fish")
# A file name: any text without NUL or "/" (and no lone surrogate, which no file system name
# holds), at most 255 bytes, never "." or "..".
NAMES = st.text(
    st.characters(exclude_characters="\x00/", exclude_categories=["Cs"]), min_size=1, max_size=60
).filter(lambda name: name not in (".", "..") and len(name.encode()) <= 255)
# Database and table names: any text without NUL.
SQL_NAMES = st.text(
    st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), min_size=1, max_size=40
)


def script_of(line: str) -> str:
    """The POSIX script a login-shell line carries."""
    match = LOGIN_SHELL_LINE.fullmatch(line)
    assert match is not None, line
    return base64.b64decode(match.group(1)).decode()


def argv_seen(script: str, tool: str, stdin: bytes = b"") -> tuple[list[str], str]:
    """Run `script` under sh with `tool` defined as a function that prints its arguments (NUL
    after each) and $PGDATABASE: what the real tool would have been given."""
    probe = f'{tool}() {{ printf "%s\\0" "$@"; printf "PGDATABASE=%s" "${{PGDATABASE-}}" >&2; }}\n'
    done = subprocess.run(["sh", "-c", probe + script], input=stdin, capture_output=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.decode().split("\0")[:-1], done.stderr.decode().removeprefix("PGDATABASE=")


def pg_exact_pattern(name: str) -> str:
    """pg_dump's pattern for exactly `name` (`schema.table` split at the first dot): each part in
    double quotes, its own double quotes doubled, so no character acts as a wildcard."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split(".", 1))


@given(NAMES, st.sampled_from([ZSTD, None]))
def test_a_login_shell_reads_only_characters_every_shell_reads_the_same(
    name: str, compressor: tuple[str, ...] | None
) -> None:
    line = make_files_backup(f"/srv/{name}", compressor).command
    assert LOGIN_SHELL_LINE.fullmatch(line)


def test_engine_detection_is_a_login_shell_line_too() -> None:
    assert LOGIN_SHELL_LINE.fullmatch(DETECT_ENGINE_COMMAND)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(NAMES, NAMES, st.sampled_from([ZSTD, None]))
def test_every_login_shell_archives_exactly_the_given_path(
    parent: str, name: str, compressor: tuple[str, ...] | None
) -> None:
    """The real command line run by each real shell (as sshd runs it: `$SHELL -c LINE`) archives
    the directory named, members named after its last component, and nothing else."""
    with tempfile.TemporaryDirectory() as root:
        source = Path(root) / parent / name
        source.mkdir(parents=True)
        (source / "file").write_text("content")
        line = make_files_backup(str(source), compressor).command
        for shell in LOGIN_SHELLS:
            done = subprocess.run([shell, "-c", line], capture_output=True, cwd=root)
            assert done.returncode == 0, (shell, done.stderr)
            archive = untar(done.stdout) if compressor else plain_names(done.stdout)
            assert sorted(archive) == sorted([name, f"{name}/file"]), shell


@given(SQL_NAMES, st.lists(SQL_NAMES, max_size=3), st.booleans())
def test_the_decoded_mysql_script_gives_mysqldump_exactly_the_given_names(
    database: str, tables: list[str], with_password: bool
) -> None:
    password = SecretRef(env="UNUSED") if with_password else None
    connection = DatabaseConnection(host="db.example.com", username="backup", password=password)
    command = make_mysql_dump(connection, database, tables, None)
    stdin = b"secret\n" if command.reads_password else b""
    argv, _ = argv_seen(script_of(command.command), "mysqldump", stdin)
    assert argv[-2:] == ["--", database]
    assert [arg for arg in argv if arg.startswith("--ignore-table=")] == [
        f"--ignore-table={database}.{table}" for table in tables
    ]
    assert "--host=db.example.com" in argv
    assert "--user=backup" in argv


@given(SQL_NAMES, st.lists(SQL_NAMES, max_size=3))
def test_the_decoded_postgres_script_gives_pg_dump_exactly_the_given_names(
    database: str, tables: list[str]
) -> None:
    command = make_postgres_dump(DatabaseConnection(port=5433), database, tables, None)
    argv, pgdatabase = argv_seen(script_of(command.command), "pg_dump")
    assert pgdatabase == database
    assert [arg for arg in argv if arg.startswith("--exclude-table=")] == [
        f"--exclude-table={pg_exact_pattern(table)}" for table in tables
    ]
    assert argv[:2] == ["--no-password", "--port=5433"]


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
        assert "DB_PASSWORD" not in script_of(command.command)
        assert "--password" not in script_of(command.command)


def test_a_dump_without_a_password_reads_no_stdin() -> None:
    assert not make_mysql_dump(DatabaseConnection(), "shop", [], ZSTD).reads_password


def test_excluded_tables_become_ignore_and_exclude_options() -> None:
    connection = DatabaseConnection()
    mysql = make_mysql_dump(connection, "shop", ["sessions"], None)
    assert "--ignore-table=shop.sessions" in argv_seen(script_of(mysql.command), "mysqldump")[0]
    # pg_dump patterns are quoted so that a name never acts as a wildcard
    pg = make_postgres_dump(connection, "shop", ["Sess*", "audit.log"], None)
    argv, _ = argv_seen(script_of(pg.command), "pg_dump")
    assert '--exclude-table="Sess*"' in argv
    assert '--exclude-table="audit"."log"' in argv


def test_text_that_is_not_valid_unicode_is_refused_not_sent() -> None:
    with pytest.raises(CommandError, match="UTF-8"):
        make_files_backup("/srv/\ud800", ZSTD)


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
