"""A backup means the same under every login shell: real users whose login shells are dash, bash,
zsh and fish (sshd runs every command through `$SHELL -c`) back up and restore paths with quotes,
`$`, backslashes, spaces and newlines; and a stream that arrives empty or cut short, with exit
status 0, fails the run under each of them, stores nothing and rotates nothing away.

A source path itself may not hold a newline (the config refuses it at validation), so newlines are
in the names inside the archived tree here; tests/test_commands.py's properties give the command
builder paths with newlines too.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.commands import DETECT_ENGINE_COMMAND
from reconciler.executor import RemoteShell, SshTarget
from reconciler.models import (
    Compression,
    DatabaseEngine,
    ResolvedTask,
    Source,
    SourceType,
    Storage,
)
from reconciler.restore import restore
from reconciler.retention import backup_name
from reconciler.types import RunStatus
from tests.runs import T0, Harness, database_connection, files_task, make_task
from tests.servers import PostgresServer, ShellLogin, SshServer, owned_directory, shell_user
from tests.trees import same_tree

SHELLS = ["dash", "bash", "zsh", "fish"]
# Quotes of both kinds, `$`, command substitutions, backslashes (one ending the name, which fish
# reads as escaping the closing quote) and spaces.
ODD_PARENT = 'it\'s "quoted" $HOME `touch pwned` $(touch pwned)'
ODD_NAME = "back\\slash \\' and  spaced\\"
CANARY = "pwned"  # created in the login's home if any part of a name ever ran as a command


@pytest.fixture(scope="module", params=SHELLS)
def login(request: pytest.FixtureRequest, sshd: SshServer) -> Iterator[ShellLogin]:
    with shell_user(request.param) as user:
        user.authorize(sshd)
        yield user


def as_login(sshd: SshServer, login: ShellLogin) -> SshServer:
    """The test sshd, reached as `login` with the server's key."""
    return dataclasses.replace(sshd, username=login.username)


def odd_source(root: Path) -> Path:
    source = root / ODD_PARENT / ODD_NAME
    (source / "inner $dir").mkdir(parents=True)
    (source / "file 'one'\nand a new line.txt").write_text("one\n")
    (source / "inner $dir" / "back\\slash\nname").write_bytes(os.urandom(50_000))
    return source


def run_record(harness: Harness, task: ResolvedTask) -> tuple[RunStatus, str, str | None]:
    status = harness.run(task)
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    return status, record.reason or "", record.backup_name


@pytest.mark.parametrize("compression", list(Compression))
def test_an_odd_source_path_backs_up_and_restores_under_every_login_shell(
    sshd: SshServer, login: ShellLogin, tmp_path: Path, compression: Compression
) -> None:
    with owned_directory(login.username, "reconciler-shells-") as root:
        source = odd_source(root)
        task = files_task(
            as_login(sshd, login),
            tmp_path / "dest",
            source,
            storage=Storage(compression=compression),
        )
        harness = Harness(tmp_path)

        status, reason, name = run_record(harness, task)

        assert status is RunStatus.SUCCESSFUL, f"{login.shell}: {reason}"
        assert name is not None
        record = harness.state.runs.latest_run(task.id)
        restored = restore(task, run=record, to=tmp_path / "out", secrets=harness.secrets)
        assert restored == tmp_path / "out" / ODD_NAME
        assert same_tree(source, restored)
    assert not (login.home / CANARY).exists()


def test_engine_detection_runs_under_every_login_shell(sshd: SshServer, login: ShellLogin) -> None:
    target = SshTarget(
        sshd.host,
        sshd.port,
        login.username,
        private_key=str(sshd.private_key),
        known_hosts=str(sshd.known_hosts),
    )
    with RemoteShell(target) as shell:
        status, found = shell.run(DETECT_ENGINE_COMMAND)
    assert status == 0
    assert set(found.split()) == {"mysqldump", "pg_dump"}


@pytest.mark.servers
def test_a_dump_of_an_oddly_named_database_reads_its_password_under_every_login_shell(
    sshd: SshServer, login: ShellLogin, postgres: PostgresServer, tmp_path: Path
) -> None:
    database = "odd 'db' $x \\ end\\"
    postgres.sql(f'DROP DATABASE IF EXISTS "{database}"')
    postgres.sql(f'CREATE DATABASE "{database}"')
    postgres.sql("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('it''s here')", database)
    connection = database_connection(DatabaseEngine.POSTGRESQL, postgres.port, postgres.username)
    source = Source(type=SourceType.DATABASE, database_name=database)
    task = make_task(as_login(sshd, login), tmp_path / "dest", source, database=connection)
    harness = Harness(tmp_path, {"DB_PASSWORD": postgres.password})

    status, reason, _ = run_record(harness, task)

    assert status is RunStatus.SUCCESSFUL, f"{login.shell}: {reason}"
    record = harness.state.runs.latest_run(task.id)
    dump = restore(task, run=record, to=tmp_path / "out", secrets=harness.secrets)
    assert "it's here" in dump.read_text()


# Forced commands (authorized_keys `command=`) that sshd runs through the login shell instead of
# ours: each runs our real command but delivers its stdout empty or cut short, exiting 0.
EMPTIED = 'sh -c "$SSH_ORIGINAL_COMMAND" > /dev/null'
CUT_SHORT = 'sh -c "$SSH_ORIGINAL_COMMAND" | head -c 20000'


@pytest.fixture
def restricted(sshd: SshServer, login: ShellLogin) -> Iterator[ShellLogin]:
    """`login`, for one test whose forced command it sets; its plain key is restored after."""
    yield login
    login.authorize(sshd)


@pytest.mark.parametrize("compression", list(Compression))
@pytest.mark.parametrize("forced", [EMPTIED, CUT_SHORT], ids=["empty", "cut"])
def test_an_empty_or_cut_stream_fails_the_run_stores_nothing_and_rotates_nothing_away(
    sshd: SshServer,
    restricted: ShellLogin,
    tmp_path: Path,
    compression: Compression,
    forced: str,
) -> None:
    restricted.authorize(sshd, forced_command=forced)
    dest = tmp_path / "dest"
    dest.mkdir()
    extension = "tar.zst" if compression is Compression.ZSTD else "tar"
    older = [backup_name(1, None, T0 - timedelta(days=days), extension) for days in (1, 2)]
    for old in older:
        (dest / old).write_bytes(b"an older backup")
    with owned_directory(restricted.username, "reconciler-shells-") as root:
        source = root / "data"
        source.mkdir()
        (source / "random.bin").write_bytes(os.urandom(1_000_000))
        task = files_task(
            as_login(sshd, restricted),
            dest,
            source,
            storage=Storage(compression=compression, max_backups=2),
        )
        harness = Harness(tmp_path)

        status, reason, name = run_record(harness, task)

    assert status is RunStatus.FAILED, f"{restricted.shell}: stored {name}"
    assert reason.startswith("the backup is incomplete, so it was not stored: "), reason
    assert name is None
    assert sorted(path.name for path in dest.iterdir()) == sorted(older)
    assert all((dest / old).read_bytes() == b"an older backup" for old in older)


@pytest.mark.servers
@pytest.mark.parametrize("compression", list(Compression))
def test_a_dump_cut_short_fails_the_run_under_every_login_shell(
    sshd: SshServer,
    restricted: ShellLogin,
    postgres: PostgresServer,
    tmp_path: Path,
    compression: Compression,
) -> None:
    postgres.sql("DROP DATABASE IF EXISTS cut_short")
    postgres.sql("CREATE DATABASE cut_short")
    postgres.sql("CREATE TABLE t AS SELECT generate_series(1, 20000) AS n", "cut_short")
    restricted.authorize(sshd, forced_command=CUT_SHORT)
    dest = tmp_path / "dest"
    dest.mkdir()
    extension = "sql.zst" if compression is Compression.ZSTD else "sql"
    older = backup_name(1, None, T0 - timedelta(days=1), extension)
    (dest / older).write_bytes(b"an older dump")
    connection = database_connection(DatabaseEngine.POSTGRESQL, postgres.port, postgres.username)
    task = make_task(
        as_login(sshd, restricted),
        dest,
        Source(type=SourceType.DATABASE, database_name="cut_short"),
        database=connection,
        storage=Storage(compression=compression, max_backups=1),
    )
    harness = Harness(tmp_path, {"DB_PASSWORD": postgres.password})

    status, reason, name = run_record(harness, task)

    assert status is RunStatus.FAILED, f"{restricted.shell}: stored {name}"
    assert reason.startswith("the backup is incomplete, so it was not stored: "), reason
    assert [path.name for path in dest.iterdir()] == [older]
