"""Nothing that waits for SQLite's write lock runs on the event loop: while another connection
holds the lock, `/healthz` still answers at once, and the waiting work completes once it is free.

The parts are wired by `daemon.build`, as `reconciler serve` wires them, and driven in-process.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import uvicorn

from reconciler.daemon import Daemon, Settings, build, close
from reconciler.state import StateStore
from reconciler.state.sqlite import SqliteStateStore
from tests import configset
from tests.gitrepo import commit_files, init_repo
from tests.servers import HOST, free_port

pytestmark = pytest.mark.anyio
_T = TypeVar("_T")

LOCK_HELD = 1.5
# Anything on the loop that waits for the lock stalls every request until the lock is released,
# about a second here; a bound that large apart from it holds on a loaded machine too.
HEALTHY_WITHIN = LOCK_HELD / 3


@dataclass
class Served:
    daemon: Daemon
    url: str


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    repo = tmp_path / "config"
    files = {
        **configset.base_files(),
        # Port 1: nothing listens there, so a run that starts fails at once, touching nothing.
        "servers/one.yaml": configset.server(1, 1, port=1),
        "tasks/1-home.yaml": configset.task(1),
    }
    init_repo(repo, files)
    port = free_port()
    daemon = build(Settings(repo=repo, state=tmp_path / "state.db", port=port))
    await daemon.engine.sync()
    server = uvicorn.Server(uvicorn.Config(daemon.app, host=HOST, port=port, log_config=None))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield Served(daemon, f"http://{HOST}:{port}")
    finally:
        server.should_exit = True
        await serving
        await close(daemon)


@contextmanager
def write_lock_held(state: Path, seconds: float) -> Iterator[None]:
    """Another connection, in its own thread, holds SQLite's write lock for `seconds`."""
    taken = threading.Event()

    def hold() -> None:
        other = sqlite3.connect(state, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            taken.set()
            time.sleep(seconds)
            other.execute("COMMIT")
        finally:
            other.close()

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(10)
    try:
        yield
    finally:
        holder.join()


class HealthChecks(threading.Thread):
    """A client asking for `/healthz` one request after another, for `seconds`."""

    def __init__(self, url: str, seconds: float) -> None:
        super().__init__()
        self._url = url
        self._seconds = seconds
        self.slowest = 0.0
        self.asking = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self._url, timeout=30) as client:
            deadline = time.perf_counter() + self._seconds
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                assert client.get("/healthz").status_code == 200
                self.slowest = max(self.slowest, time.perf_counter() - started)
                self.asking.set()
                time.sleep(0.01)


async def healthz_while_waiting(served: Served, work: Awaitable[_T]) -> _T:
    """What `work` returned; asserts that `/healthz` kept answering a client while `work` waited
    for the held lock, and that it did wait (else the test would prove nothing)."""
    started = time.perf_counter()
    with write_lock_held(Path(served.daemon.settings.state), LOCK_HELD):
        checks = HealthChecks(served.url, LOCK_HELD - 0.3)
        checks.start()
        await asyncio.to_thread(checks.asking.wait, 10)
        result = await work
        await asyncio.to_thread(checks.join)
    waited = time.perf_counter() - started
    assert checks.slowest < HEALTHY_WITHIN
    assert waited >= LOCK_HELD
    return result


async def test_a_run_request_waiting_for_the_state_store_leaves_healthz_answering(
    served: Served,
) -> None:
    _, token = served.daemon.state.tokens.create_token(1, "t", ["*"], datetime.now(UTC))
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=served.url, headers=headers, timeout=30) as client:
        # A token's use is recorded at most once a minute: this request records it.
        assert (await client.get("/api/backup-tasks/1")).status_code == 200
        response = await healthz_while_waiting(served, client.post("/api/backup-tasks/1/run"))

    assert response.status_code == 202


async def test_a_fire_waiting_for_the_state_store_leaves_healthz_answering(
    served: Served,
) -> None:
    daemon = served.daemon
    task = daemon.engine.desired.tasks[1]
    slot = datetime.now(UTC).replace(microsecond=0)

    async def fire() -> None:
        # On the event loop, exactly as the scheduler's loop calls it when a slot comes.
        daemon.fire(task, slot)
        await asyncio.to_thread(wait_for_fire, daemon.state, 1, slot)

    await healthz_while_waiting(served, fire())

    assert daemon.state.schedule.last_fired()[1] == slot


def wait_for_fire(history: StateStore, task_id: int, slot: datetime) -> None:
    deadline = time.monotonic() + 30
    while history.schedule.last_fired().get(task_id) != slot:
        assert time.monotonic() < deadline, "the fire was never recorded"
        time.sleep(0.01)


async def test_a_reconcile_waiting_for_the_state_store_leaves_healthz_answering(
    served: Served,
) -> None:
    daemon = served.daemon
    commit_files(daemon.settings.repo, {"tasks/2-new.yaml": configset.task(2)}, "add task 2")

    await healthz_while_waiting(served, daemon.engine.sync())

    assert 2 in daemon.engine.desired.tasks
    assert 2 in daemon.state.schedule.first_seen()


def test_a_token_is_checked_without_a_write(tmp_path: Path) -> None:
    history = SqliteStateStore(tmp_path / "state.db")
    try:
        now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
        _, token = history.tokens.create_token(1, "t", ["*"], now)
        with write_lock_held(tmp_path / "state.db", LOCK_HELD):
            started = time.perf_counter()
            found = history.tokens.find(token)
            elapsed = time.perf_counter() - started
        assert found is not None
        assert elapsed < HEALTHY_WITHIN  # a write would wait until the lock is released
    finally:
        history.close()
