"""State stores for tests, one of each backend: an SQLite file in the test's directory, or a
fresh database on the session's real PostgreSQL, dropped after the test."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from reconciler.state import StateStore, open_state
from tests.servers import PostgresServer

OpenStore = Callable[[], StateStore]

# Every StateStore backend by name; the state-store tests run once per entry.
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.servers)]


def postgres_url(server: PostgresServer, database: str) -> str:
    return (
        f"postgresql://{server.username}:{server.password}@{server.host}:{server.port}/{database}"
    )


@contextmanager
def fresh_postgres_database(server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database, dropped (with its connections) afterwards."""
    name = f"state_{secrets.token_hex(6)}"
    server.sql(f"CREATE DATABASE {name}")
    try:
        yield postgres_url(server, name)
    finally:
        server.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextmanager
def store_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """Opens the test's store of the backend `request.param` names; every call is one more
    handle on it, as a second process (or another node) has."""
    opened: list[StateStore] = []
    with store_location(request, tmp_path) as location:

        def open_handle() -> StateStore:
            opened.append(open_state(location))
            return opened[-1]

        try:
            yield open_handle
        finally:
            for handle in opened:
                handle.close()


@contextmanager
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    if request.param == "sqlite":
        yield tmp_path / "history.sqlite3"
        return
    with fresh_postgres_database(request.getfixturevalue("postgres")) as url:
        yield url
