"""The remote commands a backup runs, built as quoted POSIX shell strings. Pure: no I/O.

Each backup is one `sh -c '<script>'` line, so that the remote login shell (bash, zsh, even fish)
only ever sees a single quoted word, and the script always runs under a POSIX shell. Every value
from the config is `shlex.quote`d before it reaches the script.

The producer (tar, mysqldump, pg_dump) is piped through zstd on the remote: compression runs on the
machine that holds the data, and fewer bytes cross the SSH channel. POSIX sh has no `pipefail`, so
the script carries the producer's exit status out of the pipeline through a spare descriptor and
exits with it; a failing dump is never mistaken for a short, successful one.

Database passwords never appear in an argument list: the script reads the password as the first
line of its standard input (`IFS= read -r`) into `MYSQL_PWD` / `PGPASSWORD`, exports it for the
dump, and the caller writes that line into the channel. `ps` shows only the script, never the value.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from reconciler.models import DatabaseConnection, DatabaseEngine, Source, SourceType

# Level 3 is zstd's default: several hundred MB/s a core, so the SSH channel stays the bottleneck.
ZSTD = "zstd -q -c -3"
FILES_EXTENSION = "tar.zst"
DUMP_EXTENSION = "sql.zst"
ENCRYPTED_SUFFIX = "gpg"

# GNU tar exits 1 when a file changed while it was read: on a live server that is a warning.
TAR_CHANGED_FILES = 1
# Exit statuses the script itself uses, distinct from the tools' own.
EXIT_NO_PASSWORD_LINE = 97

_ENGINE_TOOLS = {DatabaseEngine.MYSQL: "mysqldump", DatabaseEngine.POSTGRESQL: "pg_dump"}
_DEFAULT_PORTS = {3306: DatabaseEngine.MYSQL, 5432: DatabaseEngine.POSTGRESQL}


class CommandError(ValueError):
    """A backup command cannot be built from this configuration."""


@dataclass(frozen=True, slots=True)
class RemoteCommand:
    """A command line for the remote shell, plus what the caller must feed its stdin."""

    command: str
    extension: str  # of the compressed stream it writes to stdout, e.g. "tar.zst"
    reads_password: bool  # the first stdin line must be the database password


def _posix(script: str) -> str:
    return "sh -c " + shlex.quote(script)


def _compressed(producer: str, *, warning_status: int | None = None) -> str:
    """`producer | zstd`, exiting with the producer's status if it failed, else zstd's.

    fd 4 is the real stdout; fd 3 carries the producer's status into `$(...)`.
    """
    tolerated = "0" if warning_status is None else f"0|{warning_status}"
    return (
        f"{{ status=$( {{ {{ {producer}; echo $? >&3; }} | {ZSTD} >&4; }} 3>&1 ); "
        "zstd_status=$?; } 4>&1; "
        f'case "$status" in {tolerated}) ;; *) exit "$status" ;; esac; '
        'exit "$zstd_status"'
    )


def make_files_backup(path: str) -> RemoteCommand:
    """tar of `path` (file or directory) to stdout, members named after its last component."""
    target = PurePosixPath(path)
    if not target.is_absolute():
        raise CommandError(f"source path must be absolute, got {path!r}")
    parent, name = (str(target.parent), target.name) if target.name else ("/", ".")
    tar = f"tar -C {shlex.quote(parent)} -cf - -- {shlex.quote(name)}"
    return RemoteCommand(
        _posix(_compressed(tar, warning_status=TAR_CHANGED_FILES)), FILES_EXTENSION, False
    )


def _password_prologue(variable: str) -> str:
    return f"IFS= read -r {variable} || exit {EXIT_NO_PASSWORD_LINE}; export {variable}; "


def make_connection_flags(connection: DatabaseConnection, user_flag: str) -> list[str]:
    """`--host`, `--port` and the user flag (named differently by each dump tool), where given."""
    flags = []
    if connection.host is not None:
        flags.append(f"--host={connection.host}")
    if connection.port is not None:
        flags.append(f"--port={connection.port}")
    if connection.username is not None:
        flags.append(f"{user_flag}={connection.username}")
    return flags


def make_mysql_dump(
    connection: DatabaseConnection, database: str, excluded_tables: Sequence[str]
) -> RemoteCommand:
    argv = ["mysqldump", "--single-transaction", "--no-tablespaces", "--routines", "--events"]
    argv += make_connection_flags(connection, "--user")
    argv += [f"--ignore-table={database}.{table}" for table in excluded_tables]
    argv += ["--", database]
    prologue = _password_prologue("MYSQL_PWD") if connection.password is not None else ""
    script = prologue + _compressed(shlex.join(argv))
    return RemoteCommand(_posix(script), DUMP_EXTENSION, connection.password is not None)


def _pg_literal(name: str) -> str:
    """A pg_dump pattern matching exactly `name` (or `schema.name`), never a wildcard."""
    parts = name.split(".", 1)
    return ".".join('"' + part.replace('"', '""') + '"' for part in parts)


def make_postgres_dump(
    connection: DatabaseConnection, database: str, excluded_tables: Sequence[str]
) -> RemoteCommand:
    # The database travels in PGDATABASE: as an argument, `host=...` would be read as a conninfo.
    argv = ["pg_dump", "--no-password", *make_connection_flags(connection, "--username")]
    argv += [f"--exclude-table={_pg_literal(table)}" for table in excluded_tables]
    prologue = _password_prologue("PGPASSWORD") if connection.password is not None else ""
    dump = f"PGDATABASE={shlex.quote(database)} {shlex.join(argv)}"
    script = prologue + _compressed(dump)
    return RemoteCommand(_posix(script), DUMP_EXTENSION, connection.password is not None)


# Prints one line per dump tool found on the remote.
DETECT_ENGINE_COMMAND = _posix(
    'for tool in mysqldump pg_dump; do command -v "$tool" >/dev/null 2>&1 && echo "$tool"; '
    "done; exit 0"
)


def choose_engine(connection: DatabaseConnection, detected_tools: str) -> DatabaseEngine:
    """The engine declared on the server, else the only dump tool found, else the port's."""
    if connection.engine is not None:
        return connection.engine
    found = {line.strip() for line in detected_tools.splitlines()}
    available = [engine for engine, tool in _ENGINE_TOOLS.items() if tool in found]
    if len(available) == 1:
        return available[0]
    if (
        connection.port in _DEFAULT_PORTS
        and _ENGINE_TOOLS[_DEFAULT_PORTS[connection.port]] in found
    ):
        return _DEFAULT_PORTS[connection.port]
    if not available:
        raise CommandError("neither mysqldump nor pg_dump is installed on the remote server")
    raise CommandError(
        "both mysqldump and pg_dump are installed on the remote server: "
        "set database.engine on the server (mysql or postgresql)"
    )


def make_dump(
    engine: DatabaseEngine, connection: DatabaseConnection, source: Source
) -> RemoteCommand:
    if source.database_name is None:
        raise CommandError("a database source needs a database_name")
    make = make_mysql_dump if engine is DatabaseEngine.MYSQL else make_postgres_dump
    return make(connection, source.database_name, source.excluded_tables)


def make_backup_command(
    source: Source, connection: DatabaseConnection | None, engine: DatabaseEngine | None
) -> RemoteCommand:
    """The command for a source; database sources need the engine (declared or detected)."""
    if source.type is SourceType.FILES:
        if source.path is None:
            raise CommandError("a files source needs a path")
        return make_files_backup(source.path)
    if engine is None:
        raise CommandError("the database engine is unknown: declare it or detect it first")
    return make_dump(engine, connection or DatabaseConnection(), source)


def backup_extension(source_type: SourceType, encrypted: bool) -> str:
    base = FILES_EXTENSION if source_type is SourceType.FILES else DUMP_EXTENSION
    return f"{base}.{ENCRYPTED_SUFFIX}" if encrypted else base
