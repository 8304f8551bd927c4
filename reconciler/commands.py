"""The remote commands a backup runs, built as POSIX shell scripts. Pure: no I/O.

sshd hands the command line to the SSH user's login shell (`$SHELL -c <line>`), and login shells
read quotes differently: fish, for one, treats a backslash inside single quotes as an escape, so a
`shlex.quote`d path ending in a backslash is a parse error there (and fish then exits 0). So what
goes over the wire never depends on the login shell: the real script is base64-encoded, and the
line is `sh -c 'reconciler_script=$(echo <base64> | base64 -d) && eval "$reconciler_script"'`,
whose only quoted text is letters, digits, `+/=`, spaces and `$()|&;"` -- no backslash and no
single quote, which dash, bash, zsh and fish (tested) and csh (by its rules) read the same way.
The script itself then always runs under POSIX sh, where every value from the config is
`shlex.quote`d. (The same idea as Mitogen's base64 bootstrap; Ansible instead asks the operator
to declare each host's shell.)

The producer (tar, mysqldump, pg_dump) is piped through zstd on the remote (unless the task's
storage says `compression: none`): compression runs on the machine that holds the data, and fewer
bytes cross the SSH channel. POSIX sh has no `pipefail`, so the script carries the producer's exit
status out of the pipeline through a spare descriptor and exits with it; a failing dump is never
mistaken for a short, successful one. A producer's tolerated warning (tar's 1, "file changed as we
read it") leaves the script with its own status `EXIT_PRODUCER_WARNING`, never 0 and never a bare
1 that anything else could have produced, so the warning counts only when the producer reported it.

Database passwords never appear in an argument list: the script reads the password as the first
line of its standard input (`IFS= read -r`) into `MYSQL_PWD` / `PGPASSWORD`, exports it for the
dump, and the caller writes that line into the channel. `ps` shows only the script, never the value.
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from reconciler.models import (
    Compression,
    DatabaseConnection,
    DatabaseEngine,
    Destination,
    ResticDestination,
    Source,
    SourceType,
    Storage,
)

ARCHIVE_EXTENSION = "tar"
DUMP_EXTENSION = "sql"
COMPRESSED_SUFFIX = "zst"
ENCRYPTED_SUFFIX = "gpg"

# GNU tar exits 1 when a file changed while it was read: on a live server that is a warning.
TAR_CHANGED_FILES = 1
TAR_CHANGED_FILES_WARNING = (
    "tar exited with 1: some files changed while they were read (the archive holds them as tar "
    "read them)"
)
# Exit statuses the script itself uses, distinct from the tools' own.
EXIT_NO_PASSWORD_LINE = 97
EXIT_PRODUCER_WARNING = 98

_ENGINE_TOOLS = {DatabaseEngine.MYSQL: "mysqldump", DatabaseEngine.POSTGRESQL: "pg_dump"}
_DEFAULT_PORTS = {3306: DatabaseEngine.MYSQL, 5432: DatabaseEngine.POSTGRESQL}


class CommandError(ValueError):
    """A backup command cannot be built from this configuration."""


@dataclass(frozen=True, slots=True)
class RemoteCommand:
    """A command line for the remote shell, plus what the caller must feed its stdin."""

    command: str
    reads_password: bool  # the first stdin line must be the database password
    # What the producer's tolerated warning means, when it has one (the script then exits with
    # EXIT_PRODUCER_WARNING); None: any status but 0 is a failure.
    producer_warning: str | None = None


@dataclass(frozen=True, slots=True)
class BackupFormat:
    """What a backup file holds, as its extension says: `tar` or `sql`, then `.zst`, then `.gpg`."""

    source_type: SourceType
    compressed: bool
    encrypted: bool

    @property
    def extension(self) -> str:
        base = ARCHIVE_EXTENSION if self.source_type is SourceType.FILES else DUMP_EXTENSION
        compressed = f".{COMPRESSED_SUFFIX}" if self.compressed else ""
        encrypted = f".{ENCRYPTED_SUFFIX}" if self.encrypted else ""
        return base + compressed + encrypted

    @classmethod
    def of(cls, name: str) -> BackupFormat | None:
        """The format of a backup named `name`, or None when the extension is not one of ours."""
        encrypted = name.endswith(f".{ENCRYPTED_SUFFIX}")
        rest = name.removesuffix(f".{ENCRYPTED_SUFFIX}")
        compressed = rest.endswith(f".{COMPRESSED_SUFFIX}")
        rest = rest.removesuffix(f".{COMPRESSED_SUFFIX}")
        for source_type, base in (
            (SourceType.FILES, ARCHIVE_EXTENSION),
            (SourceType.DATABASE, DUMP_EXTENSION),
        ):
            if rest.endswith(f".{base}"):
                return cls(source_type, compressed, encrypted)
        return None


def stored_storage(storage: Storage, destination: Destination) -> Storage:
    """`storage` as the run applies it: a restic repository gets the stream uncompressed, so
    that restic's chunking can find what an earlier run stored (restic compresses itself)."""
    if isinstance(destination, ResticDestination):
        return storage.model_copy(update={"compression": Compression.NONE})
    return storage


def make_compressor(storage: Storage) -> tuple[str, ...] | None:
    """The remote compression command of a task's storage, or None to store the stream as is.

    zstd's default level 3 compresses at several hundred MB/s a core, so a network link usually
    stays the bottleneck; level 1 is faster still, higher levels trade speed for size.
    """
    if storage.compression is Compression.NONE:
        return None
    return ("zstd", "-q", "-c", f"-{storage.compression_level}")


def backup_format(source: Source, storage: Storage, *, encrypted: bool) -> BackupFormat:
    return BackupFormat(source.type, make_compressor(storage) is not None, encrypted)


def login_shell_line(script: str) -> str:
    """The exec line that runs the POSIX `script` under `sh`, read the same by every login shell.

    If `base64` is missing on the remote, the assignment fails and sh exits with its status (127)
    and message, rather than evaluating an empty script.
    """
    try:
        encoded = script.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate, which YAML's "\\ud800" can produce
        raise CommandError(f"a name in the command is not valid UTF-8 text: {exc.reason}") from exc
    payload = base64.b64encode(encoded).decode("ascii")
    return f"sh -c 'reconciler_script=$(echo {payload} | base64 -d) && eval \"$reconciler_script\"'"


def _pipeline(
    producer: str, compressor: Sequence[str] | None, *, warning_status: int | None = None
) -> str:
    """`producer | compressor` (or the producer alone), exiting with the producer's status if it
    failed, else the compressor's if that failed, else EXIT_PRODUCER_WARNING if the producer ended
    with its tolerated `warning_status`, else 0.

    fd 4 is the real stdout; fd 3 carries the producer's status into `$(...)`.
    """
    warning = "" if warning_status is None else f"{warning_status}) warned=1 ;; "
    verdict = (
        f'warned=0; case "$status" in 0) ;; {warning}*) exit "$status" ;; esac; '
        'case "$compressor_status" in 0) ;; *) exit "$compressor_status" ;; esac; '
        f'case "$warned" in 1) exit {EXIT_PRODUCER_WARNING} ;; esac; exit 0'
    )
    if compressor is None:
        return f"{producer}; status=$?; compressor_status=0; {verdict}"
    return (
        f"{{ status=$( {{ {{ {producer}; echo $? >&3; }} | {shlex.join(compressor)} >&4; }} "
        "3>&1 ); compressor_status=$?; } 4>&1; "
        f"{verdict}"
    )


# GNU tar reads backslash escapes in the names it is given (`\0` is a NUL, so a folder named
# `\0` became an empty name): told --no-unquote, it takes them as written. Other tars (busybox,
# BSD) never unquote and do not know the option.
_GNU_TAR_VERBATIM = (
    "tar_options=; case $(tar --version 2>/dev/null) in *'GNU tar'*) tar_options=--no-unquote ;;"
    " esac; "
)


def archive_top(path: str) -> str:
    """The name the tar of the absolute `path` gives its top member: the last component, or `.`
    for `/` (whose members are then `./etc`, `./home`, ...)."""
    return PurePosixPath(path).name or "."


def make_files_backup(path: str, compressor: Sequence[str] | None) -> RemoteCommand:
    """tar of `path` (file or directory) to stdout, members named after its last component."""
    target = PurePosixPath(path)
    if not target.is_absolute():
        raise CommandError(f"source path must be absolute, got {path!r}")
    parent, name = str(target.parent), archive_top(path)
    tar = f"tar $tar_options -C {shlex.quote(parent)} -cf - -- {shlex.quote(name)}"
    script = _GNU_TAR_VERBATIM + _pipeline(tar, compressor, warning_status=TAR_CHANGED_FILES)
    return RemoteCommand(login_shell_line(script), False, TAR_CHANGED_FILES_WARNING)


def password_prologue(variable: str) -> str:
    """Script text that reads the password, the first line of stdin, into `variable` (exported)."""
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
    connection: DatabaseConnection,
    database: str,
    excluded_tables: Sequence[str],
    compressor: Sequence[str] | None,
) -> RemoteCommand:
    # --comments: an option file on the remote (`skip-comments`, `compact`) must not drop the
    # closing `-- Dump completed` line that proves the dump complete.
    argv = ["mysqldump", "--single-transaction", "--no-tablespaces", "--routines", "--events"]
    argv += ["--comments"]
    argv += make_connection_flags(connection, "--user")
    argv += [f"--ignore-table={database}.{table}" for table in excluded_tables]
    argv += ["--", database]
    prologue = password_prologue("MYSQL_PWD") if connection.password is not None else ""
    script = prologue + _pipeline(shlex.join(argv), compressor)
    return RemoteCommand(login_shell_line(script), connection.password is not None)


def _pg_literal(name: str) -> str:
    """A pg_dump pattern matching exactly `name` (or `schema.name`), never a wildcard."""
    parts = name.split(".", 1)
    return ".".join('"' + part.replace('"', '""') + '"' for part in parts)


def make_postgres_dump(
    connection: DatabaseConnection,
    database: str,
    excluded_tables: Sequence[str],
    compressor: Sequence[str] | None,
) -> RemoteCommand:
    # The database travels in PGDATABASE: as an argument, `host=...` would be read as a conninfo.
    argv = ["pg_dump", "--no-password", *make_connection_flags(connection, "--username")]
    argv += [f"--exclude-table={_pg_literal(table)}" for table in excluded_tables]
    prologue = password_prologue("PGPASSWORD") if connection.password is not None else ""
    dump = f"PGDATABASE={shlex.quote(database)} {shlex.join(argv)}"
    script = prologue + _pipeline(dump, compressor)
    return RemoteCommand(login_shell_line(script), connection.password is not None)


_VARIABLE_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
HOOK_SHELL_NAME = "reconciler-hook"  # the hook's $0, as its error messages name it


def make_hook_command(text: str, environment: Mapping[str, str]) -> str:
    """The line that runs a user's hook: `sh -c TEXT`, with `environment` exported first and the
    hook's stderr joined to its stdout (one stream, in the order it was written, for the run log).

    TEXT is one argument to `sh`, never part of our script: whatever the login shell, a hook means
    what POSIX sh makes of it, and no value of ours is spliced into it.
    """
    exports = []
    for name, value in environment.items():
        if not _VARIABLE_NAME.match(name):
            raise CommandError(f"not an environment variable name: {name!r}")
        exports.append(f"{name}={shlex.quote(value)}; export {name}; ")
    run = f"exec sh -c {shlex.quote(text)} {HOOK_SHELL_NAME} 2>&1"
    return login_shell_line("".join(exports) + run)


# Prints one line per dump tool found on the remote.
DETECT_ENGINE_COMMAND = login_shell_line(
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
    engine: DatabaseEngine,
    connection: DatabaseConnection,
    source: Source,
    compressor: Sequence[str] | None,
) -> RemoteCommand:
    if source.database_name is None:
        raise CommandError("a database source needs a database_name")
    make = make_mysql_dump if engine is DatabaseEngine.MYSQL else make_postgres_dump
    return make(connection, source.database_name, source.excluded_tables, compressor)


def make_backup_command(
    source: Source,
    storage: Storage,
    connection: DatabaseConnection | None,
    engine: DatabaseEngine | None,
) -> RemoteCommand:
    """The command for a source; database sources need the engine (declared or detected)."""
    compressor = make_compressor(storage)
    if source.type is SourceType.FILES:
        if source.path is None:
            raise CommandError("a files source needs a path")
        return make_files_backup(source.path, compressor)
    if engine is None:
        raise CommandError("the database engine is unknown: declare it or detect it first")
    return make_dump(engine, connection or DatabaseConnection(), source, compressor)
