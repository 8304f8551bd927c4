"""`reconciler state migrate --from PATH --to URL`: move a daemon's SQLite state store into an
empty PostgreSQL one, so that a single host grows into a cluster without losing its history.

What moves: runs with their logs (ids kept, so run ids in people's notes still work), tokens (as
their hashes: every token keeps working), the task-id counter, the file-time index, idempotency
keys, the scheduler's bookkeeping (fired slots, first sightings, up time, so catch-up after the
move is as it would have been), and the API-sent secrets from the file beside the SQLite store,
age-encrypted on the way to the identity's public key. Claims and nodes are not moved: they
describe daemons running now, and none may run on the SQLite store during the move.

One PostgreSQL transaction writes everything, so a failure leaves the target as empty as it was;
the SQLite file is only read. A target that holds anything already is refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from reconciler.state.errors import StateError
from reconciler.state.location import describe_location
from reconciler.state.postgres import PostgresStateStore
from reconciler.state.sqlite import SqliteStateStore
from reconciler.state.sqlite.connection import from_text

_BATCH = 1000


def _time(text: str | None) -> datetime | None:
    return None if text is None else from_text(text)


def _flag(value: int) -> bool:
    return bool(value)


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class _Table:
    """One table moved as it is: its SQLite name and columns, the PostgreSQL names, and how each
    value changes type on the way (text times to timestamps, integers to booleans)."""

    source: str
    columns: tuple[str, ...]
    target: str
    target_columns: tuple[str, ...]
    convert: tuple[Callable[[Any], Any], ...]
    serial: str | None = None  # the id column whose sequence must follow the moved ids


def _table(
    name: str, columns: Sequence[tuple[str, Callable[[Any], Any]]], serial: str | None = None
) -> _Table:
    names = tuple(column for column, _ in columns)
    return _Table(name, names, name, names, tuple(fn for _, fn in columns), serial)


_TABLES = (
    _table(
        "runs",
        [
            ("id", _same),
            ("task_id", _same),
            ("status", _same),
            ("trigger", _same),
            ("started_at", _time),
            ("finished_at", _time),
            ("reason", _same),
            ("size", _same),
            ("backup_name", _same),
            ("target_destination", _same),
            ("target_directory", _same),
            ("target_name", _same),
            ("sha256", _same),
            ("kind", _same),
            ("restic_snapshot_id", _same),
            ("restic_data_added", _same),
            ("restic_total_bytes", _same),
        ],
        serial="id",
    ),
    _table(
        "run_logs",
        [
            ("id", _same),
            ("run_id", _same),
            ("first_line", _same),
            ("line_count", _same),
            ("lines", _same),
        ],
        serial="id",
    ),
    _table(
        "tokens",
        [
            ("id", _same),
            ("user_id", _same),
            ("name", _same),
            ("abilities", _same),
            ("hash", _same),
            ("created_at", _time),
            ("last_used_at", _time),
            ("operator", _flag),
        ],
        serial="id",
    ),
    _table("counters", [("name", _same), ("value", _same)]),
    _table(
        "idempotency_keys",
        [
            ("user_id", _same),
            ("key", _same),
            ("fingerprint", _same),
            ("status", _same),
            ("body", _same),
            ("created_at", _time),
        ],
    ),
    _table(
        "file_times",
        [("path", _same), ("created_at", _time), ("updated_at", _time), ("present", _flag)],
    ),
    _Table(
        "file_times_revision",
        ("only", "revision"),
        "file_times_revision",
        ("singleton", "revision"),
        (_same, _same),
    ),
    _table("fires", [("task_id", _same), ("slot", _time)]),
    _table("seen", [("task_id", _same), ("at", _time)]),
    _table("alive", [("id", _same), ("since", _time), ("until", _time)], serial="id"),
)
# Anything in one of these means the target is in use: it is never merged into.
_IN_USE = ("runs", "tokens", "counters", "file_times", "fires", "seen", "alive", "api_secrets")


@dataclass(frozen=True, slots=True)
class Moved:
    """How many rows of each kind moved, in the order they were written."""

    counts: tuple[tuple[str, int], ...]

    def summary(self) -> str:
        return ", ".join(f"{count} {name}" for name, count in self.counts)


def migrate_state(
    source: Path,
    target: str,
    secrets: Iterable[tuple[str, str]],
    now: datetime,
) -> Moved:
    """Copy the SQLite store at `source` into the empty PostgreSQL store at `target`; `secrets`
    are the API secrets as (key, age armor), already encrypted. StateError when the source is
    missing, the target is not empty, or the copy fails (the target is then left as it was).
    Runs the source's daemon left unfinished end failed first, as its next start would end
    them: in a cluster no node would (a node ends only the runs of claims it takes over)."""
    if not source.is_file():
        raise StateError(f"{source}: no SQLite state store there")
    source_store = SqliteStateStore(source)  # brings it to this version's schema first
    try:
        source_store.runs.recover_interrupted(now)
    finally:
        source_store.close()
    PostgresStateStore(target).close()  # creates or migrates the target's schema
    armors = list(secrets)
    with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as reading:
        try:
            with psycopg.connect(target) as writing, writing.transaction():
                _refuse_in_use(writing, target)
                counts = [(table.source, _copy(reading, writing, table)) for table in _TABLES]
                with writing.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO api_secrets (key, armor) VALUES (%s, %s)", armors
                    )
                counts.append(("secrets", len(armors)))
        except psycopg.Error as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StateError(
                f"moving {source} into {describe_location(target)} failed, nothing was"
                f" written there: {detail}"
            ) from None
    return Moved(tuple(counts))


def _refuse_in_use(db: psycopg.Connection[Any], target: str) -> None:
    for table in _IN_USE:
        row = db.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))
        ).fetchone()
        if row is not None and row[0]:
            raise StateError(
                f"{describe_location(target)} is in use (its {table} table has rows): the state"
                " moves only into an empty store"
            )


def _rows(reading: sqlite3.Connection, table: _Table) -> Iterator[list[tuple[Any, ...]]]:
    query = f"SELECT {', '.join(table.columns)} FROM {table.source}"  # noqa: S608 - fixed names
    cursor = reading.execute(query)
    while batch := cursor.fetchmany(_BATCH):
        yield [
            tuple(convert(value) for convert, value in zip(table.convert, row, strict=True))
            for row in batch
        ]


def _copy(reading: sqlite3.Connection, writing: psycopg.Connection[Any], table: _Table) -> int:
    insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table.target),
        sql.SQL(", ").join(map(sql.Identifier, table.target_columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(table.target_columns)),
    )
    moved = 0
    with writing.cursor() as cursor:
        for batch in _rows(reading, table):
            cursor.executemany(insert, batch)
            moved += len(batch)
        if table.serial is not None:
            cursor.execute(
                sql.SQL(
                    "SELECT setval(pg_get_serial_sequence({}, {}), COALESCE(MAX({}), 0) + 1,"
                    " false) FROM {}"
                ).format(
                    sql.Literal(table.target),
                    sql.Literal(table.serial),
                    sql.Identifier(table.serial),
                    sql.Identifier(table.target),
                )
            )
    return moved
