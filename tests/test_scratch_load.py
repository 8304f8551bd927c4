"""`verify: {load_into}`: a real dump (MariaDB, PostgreSQL) loaded over real SSH into a scratch
database on the real server, its rows counted against the dump's, the database dropped after
success and after failure alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.models import Compression, ResolvedTask
from reconciler.scratchcommands import scratch_name
from reconciler.scratchload import ScratchLoad, ScratchLoadError, load_into_scratch
from reconciler.state.runs import RunRecord
from tests.runs import Harness
from tests.servers import MariaDbServer, PostgresServer, SshServer
from tests.test_verify import mariadb_backed_up, postgres_backed_up

pytestmark = pytest.mark.servers
DRILL_RUN = 77


def with_scratch(task: ResolvedTask) -> ResolvedTask:
    """The task loading into its own server entry (the test server runs both engines)."""
    return task.model_copy(update={"scratch_server": task.server})


def scratch_databases_on_postgres(postgres: PostgresServer) -> list[str]:
    found = postgres.sql("SELECT datname FROM pg_database WHERE datname LIKE 'reconciler_drill%'")
    return found.split()


def scratch_databases_on_mariadb(mariadb: MariaDbServer) -> list[str]:
    return mariadb.sql("SHOW DATABASES LIKE 'reconciler\\_drill%'").split()


def load(task: ResolvedTask, record: RunRecord, harness: Harness) -> tuple[list[str], ScratchLoad]:
    lines: list[str] = []
    loaded = load_into_scratch(
        with_scratch(task), record, DRILL_RUN, secrets=harness.secrets, log=lines.append
    )
    return lines, loaded


def test_a_mariadb_dump_loads_with_every_row_and_the_scratch_database_is_dropped(
    sshd: SshServer, mariadb: MariaDbServer, tmp_path: Path
) -> None:
    task, harness, record, _ = mariadb_backed_up(tmp_path, sshd, mariadb)

    lines, loaded = load(task, record, harness)

    assert loaded.problems == ()
    assert "restore drill: table items: 3 rows dumped, 3 loaded" in lines
    assert "restore drill: table sessions: 1 rows dumped, 1 loaded" in lines
    assert scratch_databases_on_mariadb(mariadb) == []


@pytest.mark.parametrize("compression", [Compression.NONE, Compression.ZSTD])
def test_a_postgresql_dump_loads_with_every_row_and_the_scratch_database_is_dropped(
    sshd: SshServer, postgres: PostgresServer, tmp_path: Path, compression: Compression
) -> None:
    task, harness, record, _ = postgres_backed_up(tmp_path, sshd, postgres, compression)

    lines, loaded = load(task, record, harness)

    assert loaded.problems == ()
    assert "restore drill: table public.items: 500 rows dumped, 500 loaded" in lines
    assert scratch_databases_on_postgres(postgres) == []


def test_rows_that_do_not_arrive_are_a_problem_naming_the_table(
    sshd: SshServer, postgres: PostgresServer, tmp_path: Path
) -> None:
    task, harness, record, stored = postgres_backed_up(tmp_path, sshd, postgres, Compression.NONE)
    # A trigger that drops every row, created before the data: the dump loads, its rows do not.
    skip = (
        b"CREATE FUNCTION public.skip() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL;"
        b" END$$;\nCREATE TRIGGER skip BEFORE INSERT ON public.items FOR EACH ROW EXECUTE"
        b" FUNCTION public.skip();\n"
    )
    dump = stored.read_bytes()
    copy = dump.index(b"COPY public.items")
    stored.write_bytes(dump[:copy] + skip + dump[copy:])

    _, loaded = load(task, record, harness)

    assert loaded.problems == ("table public.items: 500 rows in the dump, 0 loaded",)
    assert scratch_databases_on_postgres(postgres) == []


def test_a_dump_that_does_not_load_fails_with_the_clients_error_and_is_dropped(
    sshd: SshServer, postgres: PostgresServer, tmp_path: Path
) -> None:
    task, harness, record, stored = postgres_backed_up(tmp_path, sshd, postgres, Compression.NONE)
    stored.write_bytes(stored.read_bytes().replace(b"\n7\titem 7\n", b"\nseven\titem 7\n"))

    with pytest.raises(ScratchLoadError, match=r"loading the dump: .*invalid input syntax"):
        load(task, record, harness)
    assert scratch_databases_on_postgres(postgres) == []


def test_a_scratch_name_already_in_use_fails_and_that_database_is_left_alone(
    sshd: SshServer, postgres: PostgresServer, tmp_path: Path
) -> None:
    task, harness, record, _ = postgres_backed_up(tmp_path, sshd, postgres, Compression.NONE)
    taken = scratch_name(task.id, DRILL_RUN)
    postgres.sql(f'CREATE DATABASE "{taken}"')
    try:
        with pytest.raises(ScratchLoadError, match=f"creating {taken}: .*already exists"):
            load(task, record, harness)
        assert scratch_databases_on_postgres(postgres) == [taken]
    finally:
        postgres.sql(f'DROP DATABASE "{taken}"')


def test_hostile_table_names_are_counted_as_the_tables_they_name(
    sshd: SshServer, mariadb: MariaDbServer, postgres: PostgresServer, tmp_path: Path
) -> None:
    mariadb.sql("DROP DATABASE IF EXISTS shop; CREATE DATABASE shop;")
    mariadb.sql(
        "CREATE TABLE shop.`we``ird; DROP DATABASE shop; --` (id INT);"
        "INSERT INTO shop.`we``ird; DROP DATABASE shop; --` VALUES (1), (2);",
        "shop",
    )
    task, harness, record, _ = mariadb_backed_up(tmp_path, sshd, mariadb, schema=None)

    lines, loaded = load(task, record, harness)

    assert loaded.problems == ()
    assert "restore drill: table we`ird; DROP DATABASE shop; --: 2 rows dumped, 2 loaded" in lines
    assert mariadb.sql("SHOW DATABASES LIKE 'shop'").split() == ["shop"]


def test_a_large_mariadb_dump_that_fails_early_reports_the_clients_error(
    sshd: SshServer, mariadb: MariaDbServer, tmp_path: Path
) -> None:
    task, harness, record, stored = mariadb_backed_up(tmp_path, sshd, mariadb)
    dump = stored.read_bytes()
    rows = b"".join(
        b"INSERT INTO `items` VALUES (%d,'item %d');\n" % (n, n) for n in range(10, 800_000)
    )
    first_insert = dump.index(b"INSERT INTO `items`")
    stored.write_bytes(dump[:first_insert] + b"NOT SQL AT ALL;\n" + rows + dump[first_insert:])

    with pytest.raises(ScratchLoadError, match=r"loading the dump: .*SQL syntax"):
        load(task, record, harness)
    assert scratch_databases_on_mariadb(mariadb) == []
