"""`verify: {load_into: SERVER_ID}`: load a dump into a scratch database and count its rows.

The dump is read from its destination through restore's reading path (restore.stream_plaintext:
gpg, `zstd -d`) and sent, as it streams, to the engine's client on the `load_into` server over
SSH; on the way, `dumptables` counts the rows it holds for each table. Then one `SELECT count(*)`
a table on the scratch database says what arrived. The scratch database
(`reconciler_drill_<task>_<number>`) is created first, so a name already in use fails the drill
rather than touching that database, and it is dropped at the end whatever happened, once it was
created.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from reconciler.checksum import Readable
from reconciler.commands import BackupFormat
from reconciler.destinations import open_destination
from reconciler.dumptables import DumpFormatError, DumpTables, display_name
from reconciler.encryption import CHUNK_SIZE
from reconciler.executor import ExecutorError, RemoteShell, SshTarget
from reconciler.models import DatabaseConnection, DatabaseEngine, RemoteServer, ResolvedTask
from reconciler.restore import choose_backup, reading_keys, stream_plaintext
from reconciler.scratchcommands import (
    count_statements,
    create_statement,
    drop_statement,
    make_sql_client,
    scratch_name,
)
from reconciler.secrets import Secrets
from reconciler.state.runs import RunRecord
from reconciler.types import ReconcilerError

# A load takes as long as a restore would; the drill is bounded like a run (the daemon's default).
LOAD_TIMEOUT_SECONDS = 6 * 3600
STATEMENT_TIMEOUT_SECONDS = 600


class ScratchLoadError(ReconcilerError):
    """The scratch database could not be created or loaded: says which step, where and why."""


@dataclass(frozen=True, slots=True)
class TableCount:
    table: str  # as people write it, the dump's quoting taken off
    dumped: int
    loaded: int


@dataclass(frozen=True, slots=True)
class ScratchLoad:
    """What loading the dump found: `problems` is empty when every table arrived whole."""

    database: str
    server_id: int
    tables: tuple[TableCount, ...]
    problems: tuple[str, ...]

    def summary(self) -> str:
        rows = sum(table.dumped for table in self.tables)
        where = f"into {self.database} on server {self.server_id}"
        if self.problems:
            return f"loading the dump {where} failed: " + "; ".join(self.problems)
        return f"loaded the dump {where}: {len(self.tables)} tables, {rows} rows, all there"


class _Client:
    """The load_into server's SQL client over one SSH connection."""

    def __init__(
        self,
        shell: RemoteShell,
        engine: DatabaseEngine,
        connection: DatabaseConnection,
        password: bytes,
    ) -> None:
        self._shell = shell
        self._engine = engine
        self._connection = connection
        self._password = password

    def execute(self, database: str | None, sql: bytes, what: str) -> str:
        """Run `sql` in `database`; its output. ScratchLoadError naming `what` when it fails."""
        output: list[bytes] = []
        self._send(database, iter((sql,)), output.append, what)
        return b"".join(output).decode("utf-8", "replace")

    def load(self, database: str, dump: Iterator[bytes], log: Callable[[str], None]) -> None:
        self._send(database, dump, lambda _: None, "loading the dump", log)

    def _send(
        self,
        database: str | None,
        stdin: Iterator[bytes],
        sink: Callable[[bytes], None],
        what: str,
        log: Callable[[str], None] | None = None,
    ) -> None:
        command = make_sql_client(self._engine, self._connection, database)
        timeout = LOAD_TIMEOUT_SECONDS if log is not None else STATEMENT_TIMEOUT_SECONDS
        password = (self._password,) if command.reads_password else ()
        try:
            result = self._shell.stream(
                command.command,
                sink,
                stdin=_chain(password, stdin),
                timeout=timeout,
                on_stderr_line=log,
            )
        except ExecutorError as exc:
            raise ScratchLoadError(f"{what}: {exc}") from exc
        if result.exit_status != 0:
            said = " / ".join(result.stderr_tail[-3:]) or "no message"
            raise ScratchLoadError(f"{what}: the client exited with {result.exit_status}: {said}")


def _chain(first: tuple[bytes, ...], rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from first
    yield from rest


def load_into_scratch(
    task: ResolvedTask,
    run: RunRecord,
    number: int,
    *,
    secrets: Secrets,
    log: Callable[[str], None],
    known_hosts: Path | None = None,
) -> ScratchLoad:
    """Load run `run`'s dump into `reconciler_drill_<task>_<number>` on the task's load_into
    server, compare each table's rows with the dump's, drop the database. ScratchLoadError when
    it cannot be created or loaded (the dump does not restore); a count that differs is a
    problem of the result."""
    scratch = task.scratch_server
    if scratch is None or scratch.database is None or scratch.database.engine is None:
        raise ScratchLoadError(f"task {task.id} has no verify.load_into server with an engine")
    connection, engine = scratch.database, scratch.database.engine
    secret = "" if connection.password is None else secrets.resolve(connection.password)
    database = scratch_name(task.id, number)
    with RemoteShell(SshTarget.for_server(scratch, known_hosts=known_hosts)) as shell:
        client = _Client(shell, engine, connection, f"{secret}\n".encode())
        client.execute(None, create_statement(engine, database), f"creating {database}")
        log(f"restore drill: loading the dump into {database} on server {scratch.id} ({engine})")
        try:
            tables = _load_and_count(task, run, client, engine, database, secrets, log, known_hosts)
        finally:
            dropped = _drop(client, engine, database, scratch)
            log(dropped or f"restore drill: dropped {database}")
    problems = [
        f"table {table.table}: {table.dumped} rows in the dump, {table.loaded} loaded"
        for table in tables
        if table.dumped != table.loaded
    ]
    if dropped:
        problems.append(dropped)
    return ScratchLoad(database, scratch.id, tuple(tables), tuple(problems))


def _drop(client: _Client, engine: DatabaseEngine, database: str, scratch: RemoteServer) -> str:
    """Drop the scratch database; what went wrong, or "" when it is gone."""
    try:
        client.execute(None, drop_statement(engine, database), f"dropping {database}")
    except ScratchLoadError as exc:
        return f"the scratch database {database} on server {scratch.id} is left behind: {exc}"
    return ""


def _load_and_count(
    task: ResolvedTask,
    run: RunRecord,
    client: _Client,
    engine: DatabaseEngine,
    database: str,
    secrets: Secrets,
    log: Callable[[str], None],
    known_hosts: Path | None,
) -> list[TableCount]:
    store = open_destination(task.destination, secrets.resolve, known_hosts=known_hosts)
    try:
        directory = task.task.storage.path
        name = choose_backup(task, run, [b.name for b in store.list_backups(directory)])
        form, passphrase = reading_keys(task, name, secrets)
        counter = DumpTables(engine)

        def consume(plaintext: IO[bytes]) -> dict[str, int]:
            client.load(database, _counted(plaintext, counter), log)
            return counter.finish()

        with store.open_reader(directory, name) as reader:
            dumped = _stream(reader, passphrase, form, consume)
    finally:
        store.close()
    output = client.execute(database, count_statements(engine, dumped), "counting the rows")
    loaded = [int(line) for line in output.split()]
    if len(loaded) != len(dumped):
        raise ScratchLoadError(f"counting the rows: {len(loaded)} counts for {len(dumped)} tables")
    tables = [
        TableCount(display_name(table), rows, count)
        for (table, rows), count in zip(dumped.items(), loaded, strict=True)
    ]
    for table in tables:
        log(
            f"restore drill: table {table.table}: {table.dumped} rows dumped, {table.loaded} loaded"
        )
    return tables


def _stream(
    reader: Readable,
    passphrase: str | None,
    form: BackupFormat,
    consume: Callable[[IO[bytes]], dict[str, int]],
) -> dict[str, int]:
    try:
        return stream_plaintext(reader, passphrase, form, consume)
    except DumpFormatError as exc:
        raise ScratchLoadError(f"reading the dump: {exc}") from exc


def _counted(plaintext: IO[bytes], counter: DumpTables) -> Iterator[bytes]:
    while chunk := plaintext.read(CHUNK_SIZE):
        counter.feed(chunk)
        yield chunk
