"""The tables and row counts of a dump, read as it streams: generated dumps in both engines'
forms, whatever the names, values and chunking, and what a dump cut short says."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.dumptables import DumpFormatError, DumpTables, display_name, is_quoted_table
from reconciler.models import DatabaseEngine

NAMES = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\n\x00"),
    min_size=1,
    max_size=12,
)
VALUES = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12
)
TABLES = st.lists(
    st.tuples(NAMES, st.lists(st.lists(VALUES, min_size=1, max_size=3), max_size=6)),
    max_size=4,
    unique_by=lambda table: table[0],
)


def mysql_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return f"'{escaped}'"


def mysql_dump(tables: list[tuple[str, list[list[str]]]], rows_per_insert: int) -> bytes:
    """What mysqldump writes, in outline: each table created, then its rows in extended INSERTs."""
    lines = ["-- MariaDB dump", "/*!40101 SET NAMES utf8mb4 */;"]
    for name, rows in tables:
        quoted = "`" + name.replace("`", "``") + "`"
        lines += [f"DROP TABLE IF EXISTS {quoted};", f"CREATE TABLE {quoted} (", "  `a` text", ");"]
        for start in range(0, len(rows), rows_per_insert):
            batch = rows[start : start + rows_per_insert]
            values = ",".join("(" + ",".join(map(mysql_string, row)) + ")" for row in batch)
            lines.append(f"INSERT INTO {quoted} VALUES {values};")  # noqa: S608  # a dump, not SQL we run
    lines.append("-- Dump completed on 2026-12-02 21:00:00")
    return "\n".join(lines).encode() + b"\n"


def postgres_copy_value(value: str) -> str:
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def postgres_dump(tables: list[tuple[str, list[list[str]]]]) -> bytes:
    """What pg_dump's plain format writes, in outline: tables created, then COPY blocks."""
    lines = ["-- PostgreSQL database dump", "SET client_encoding = 'UTF8';"]
    names = ['public."' + name.replace('"', '""') + '"' for name, _ in tables]
    for quoted in names:
        lines += [f"CREATE TABLE {quoted} (", "    a text", ");"]
    for quoted, (_, rows) in zip(names, tables, strict=True):
        lines.append(f"COPY {quoted} (a, b, c) FROM stdin;")
        lines += ["\t".join(map(postgres_copy_value, row)) for row in rows]
        lines.append("\\.")
    lines.append("-- PostgreSQL database dump complete")
    return "\n".join(lines).encode() + b"\n"


def counted(engine: DatabaseEngine, dump: bytes, chunk: int) -> dict[str, int]:
    tables = DumpTables(engine)
    for start in range(0, len(dump), chunk):
        tables.feed(dump[start : start + chunk])
    return {display_name(name): rows for name, rows in tables.finish().items()}


@given(TABLES, st.integers(1, 4), st.integers(1, 64))
def test_a_mysql_dump_counts_every_row_of_every_table(
    tables: list[tuple[str, list[list[str]]]], per_insert: int, chunk: int
) -> None:
    dump = mysql_dump(tables, per_insert)

    assert counted(DatabaseEngine.MYSQL, dump, chunk) == {name: len(rows) for name, rows in tables}


@given(TABLES, st.integers(1, 64))
def test_a_postgresql_dump_counts_every_row_of_every_table(
    tables: list[tuple[str, list[list[str]]]], chunk: int
) -> None:
    dump = postgres_dump(tables)

    assert counted(DatabaseEngine.POSTGRESQL, dump, chunk) == {
        f"public.{name}": len(rows) for name, rows in tables
    }


@given(TABLES)
def test_every_table_name_read_is_one_whole_quoted_identifier(
    tables: list[tuple[str, list[list[str]]]],
) -> None:
    for engine, dump in (
        (DatabaseEngine.MYSQL, mysql_dump(tables, 2)),
        (DatabaseEngine.POSTGRESQL, postgres_dump(tables)),
    ):
        reader = DumpTables(engine)
        reader.feed(dump)
        assert all(is_quoted_table(engine, name) for name in reader.finish())


@pytest.mark.parametrize(
    "name",
    ["`a` ; DROP DATABASE x; `b`", "`a`` b", "`a`\n`b`", "a", "`a` `b`"],
)
def test_text_that_is_not_one_mysql_identifier_is_refused(name: str) -> None:
    assert not is_quoted_table(DatabaseEngine.MYSQL, name)


@pytest.mark.parametrize(
    "name", ['public."a"; DROP DATABASE x; --', 'public."a', "public.a b", 'a."b"."c"', "1a"]
)
def test_text_that_is_not_one_postgresql_identifier_is_refused(name: str) -> None:
    assert not is_quoted_table(DatabaseEngine.POSTGRESQL, name)


def test_a_statement_of_many_lines_counts_its_rows() -> None:
    dump = (
        b"CREATE TABLE `t` (\n`a` int);\nINSERT INTO `t` VALUES (1,'x(y'),\n(2,'z;'),\n(3,NULL);\n"
    )

    assert counted(DatabaseEngine.MYSQL, dump, 5) == {"t": 3}


def test_a_view_stand_in_is_not_a_table() -> None:
    dump = b"/*!50001 CREATE TABLE `v` (\n  `a` int\n) */;\nCREATE TABLE `t` (\n`a` int);\n"

    assert counted(DatabaseEngine.MYSQL, dump, 100) == {"t": 0}


def test_a_postgresql_dump_cut_inside_a_copy_is_an_error() -> None:
    reader = DumpTables(DatabaseEngine.POSTGRESQL)
    reader.feed(b"CREATE TABLE public.t (\n    a int\n);\nCOPY public.t (a) FROM stdin;\n1\n2\n")

    with pytest.raises(DumpFormatError, match=r"ends inside the rows of public\.t"):
        reader.finish()


def test_rows_for_a_table_the_dump_never_creates_are_an_error() -> None:
    reader = DumpTables(DatabaseEngine.MYSQL)

    with pytest.raises(DumpFormatError, match="line 1: rows for `t`"):
        reader.feed(b"INSERT INTO `t` VALUES (1);\n")
