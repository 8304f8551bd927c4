"""What a restore drill runs on its `load_into` server: the SQL client, and the statements that
create, count and drop the scratch database. Pure: no I/O.

Every step is one run of the engine's command-line client (`mysql`, `psql`) on that server, over
SSH, inside the same login-shell-proof wrapper as a dump (`commands.login_shell_line`); the SQL
and the dump itself go to the client's standard input, after the password line when the server
has a password (`commands.password_prologue`), so nothing but fixed options is ever on the
command line. A client stops at the first error (`mysql` in batch mode, `psql -v
ON_ERROR_STOP=1`) and exits non-zero, naming it.

The scratch database is named `reconciler_drill_<task>_<run>`: only digits come from outside, so
the name can never be, or be quoted into, another database's.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from reconciler.commands import (
    RemoteCommand,
    login_shell_line,
    make_connection_flags,
    password_prologue,
)
from reconciler.dumptables import is_quoted_table
from reconciler.models import DatabaseConnection, DatabaseEngine

SCRATCH_PREFIX = "reconciler_drill_"
_SCRATCH_NAME = re.compile(rf"^{SCRATCH_PREFIX}[0-9]+_[0-9]+$")
# psql needs a database to connect to while it creates or drops another.
POSTGRES_MAINTENANCE_DATABASE = "postgres"


def scratch_name(task_id: int, run_id: int) -> str:
    return f"{SCRATCH_PREFIX}{task_id}_{run_id}"


def _quoted(engine: DatabaseEngine, name: str) -> str:
    if not _SCRATCH_NAME.match(name):
        raise ValueError(f"not a scratch database name: {name!r}")
    return f"`{name}`" if engine is DatabaseEngine.MYSQL else f'"{name}"'


def make_sql_client(
    engine: DatabaseEngine, connection: DatabaseConnection, database: str | None
) -> RemoteCommand:
    """The engine's client reading SQL from stdin, connected to `database` (None: none for
    MySQL, the maintenance database for PostgreSQL); one value a line for a query's rows."""
    reads_password = connection.password is not None
    if engine is DatabaseEngine.MYSQL:
        argv = ["mysql", "--batch", "--skip-column-names"]
        argv += make_connection_flags(connection, "--user")
        if database is not None:
            argv.append(f"--database={database}")
        client = shlex.join(argv)
        variable = "MYSQL_PWD"
    else:
        argv = ["psql", "--no-password", "--no-psqlrc", "--quiet", "--tuples-only", "--no-align"]
        argv += ["--set=ON_ERROR_STOP=1", *make_connection_flags(connection, "--username")]
        target = database or POSTGRES_MAINTENANCE_DATABASE
        client = f"PGDATABASE={shlex.quote(target)} {shlex.join(argv)}"
        variable = "PGPASSWORD"
    prologue = password_prologue(variable) if reads_password else ""
    return RemoteCommand(login_shell_line(prologue + client), reads_password)


def create_statement(engine: DatabaseEngine, name: str) -> bytes:
    return f"CREATE DATABASE {_quoted(engine, name)};\n".encode()


def drop_statement(engine: DatabaseEngine, name: str) -> bytes:
    # WITH (FORCE) ends a connection the load left behind, which would otherwise keep it.
    force = " WITH (FORCE)" if engine is DatabaseEngine.POSTGRESQL else ""
    return f"DROP DATABASE IF EXISTS {_quoted(engine, name)}{force};\n".encode()


def count_statements(engine: DatabaseEngine, tables: Iterable[str]) -> bytes:
    """One `SELECT count(*)` a table, in order. Each name is as the dump quoted it, which
    dumptables matched against the engine's whole identifier grammar; ONLY keeps a PostgreSQL
    parent table's count from including its children's rows."""
    only = "ONLY " if engine is DatabaseEngine.POSTGRESQL else ""
    statements = []
    for table in tables:
        if not is_quoted_table(engine, table):
            raise ValueError(f"not one quoted table name: {table!r}")
        # Checked just above to be one whole identifier: it cannot end the statement.
        statements.append(f"SELECT count(*) FROM {only}{table};\n")  # noqa: S608
    return "".join(statements).encode("utf-8", "surrogateescape")
