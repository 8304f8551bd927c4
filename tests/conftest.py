"""Session-wide real servers on 127.0.0.1 (one set per xdist worker: session scope is per process).

`sshd` is cheap and used by sftp and executor tests; the database servers start only when a test
asks for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.servers import (
    BlockedDump,
    MariaDbServer,
    PostgresServer,
    SshServer,
    start_mariadb,
    start_postgres,
    start_sshd,
)
from tests.stores import BACKENDS, OpenStore, store_opener

# Hypothesis fails an example that takes over 200 ms by default: a wall-clock assert, which a
# loaded machine trips on (a four-file build took 440 ms beside five other test suites). What a
# property test proves is its property; how fast the code is, bench/ measures.
settings.register_profile("reconciler", deadline=None)
settings.load_profile("reconciler")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A real OpenSSH server: root login with `sshd.private_key`, host key in `sshd.known_hosts`."""
    with start_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MariaDbServer]:
    """A real MariaDB with a password-authenticated TCP user `mariadb.username`."""
    with start_mariadb() as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL with a password-authenticated (scram) TCP user `postgres.username`."""
    with start_postgres() as server:
        yield server


@pytest.fixture(params=BACKENDS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """Opens the test's state store, once per backend; every call is one more handle on it."""
    with store_opener(request, tmp_path) as opener:
        yield opener


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (`pytest.mark.anyio`) run on asyncio, the daemon's event loop."""
    return "asyncio"


@pytest.fixture
def blocked(postgres: PostgresServer) -> Iterator[BlockedDump]:
    dump = BlockedDump(postgres)
    yield dump
    dump.release()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--kill-trials",
        type=int,
        default=20,
        help="kill -9 trials of the daemon during API writes (CI: 20; a soak: 100)",
    )
