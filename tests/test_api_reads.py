"""Reads answer from what the applied revision decides, computed once per revision, and from
what is live (run states, tokens) on every request."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import httpx
import pytest

from reconciler import daemon
from reconciler.state import open_state
from reconciler.types import TOKEN_USE_FLUSH_SECONDS as FLUSH_SECONDS
from tests import configset
from tests.apirig import START, ApiRig, api_rig, config_files, settings
from tests.clock import FakeClock
from tests.gitrepo import commit_files, init_repo

pytestmark = pytest.mark.anyio

T = TypeVar("T")


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ApiRig]:
    async with api_rig(tmp_path) as made:
        yield made


async def _label(rig: ApiRig, task_id: int) -> tuple[str, str]:
    """The task's label as the list and as show answer it."""
    listed = (await rig.get("/api/backup-tasks")).json()["data"]
    shown = (await rig.get(f"/api/backup-tasks/{task_id}")).json()["data"]
    return next(task["label"] for task in listed if task["id"] == task_id), shown["label"]


async def test_a_commit_that_changes_a_task_shows_in_the_next_list_and_show(rig: ApiRig) -> None:
    assert await _label(rig, 1) == ("task 1", "task 1")

    commit_files(rig.repo, {"tasks/1-first.yaml": configset.task(1, label="renamed")}, "edit")
    await rig.engine.sync()

    assert await _label(rig, 1) == ("renamed", "renamed")


async def test_a_task_added_by_a_commit_is_in_the_next_list(rig: ApiRig) -> None:
    await rig.get("/api/backup-tasks")

    commit_files(rig.repo, {"tasks/3-third.yaml": configset.task(3)}, "add")
    await rig.engine.sync()

    listed = (await rig.get("/api/backup-tasks")).json()
    assert [task["id"] for task in listed["data"]] == [1, 3, 7]
    assert listed["meta"]["total"] == 3


async def test_a_run_starting_shows_in_the_next_read_without_a_new_revision(rig: ApiRig) -> None:
    before = (await rig.get("/api/backup-tasks/1")).json()["data"]
    assert (before["status"], before["last_run_utc_time"]) == ("ready", None)
    revision = rig.engine.revision

    # As another process (`reconciler run`) would: straight into the state store.
    other = open_state(rig.daemon.settings.state)
    try:
        other.runs.start_run(1, "cli", START + timedelta(minutes=5))
    finally:
        other.close()

    shown = (await rig.get("/api/backup-tasks/1")).json()["data"]
    listed = (await rig.get("/api/backup-tasks")).json()["data"][0]
    assert rig.engine.revision == revision
    for task in (shown, listed):
        assert task["status"] == "running"
        assert task["last_run_utc_time"] == "2026-03-10T12:05:00Z"
        assert task["last_run_local_time"] == "2026-03-10 12:05:00"
    status = (await rig.get("/api/backup-tasks/1/status")).json()
    assert status == {"data": {"id": 1, "status": "running"}}


async def test_todays_scheduled_times_follow_the_date_on_a_cached_task(tmp_path: Path) -> None:
    files = {
        **config_files(),
        "tasks/1-first.yaml": configset.task(
            1, schedule={"frequency": "daily", "time": "03:00", "timezone": "Europe/London"}
        ),
    }
    async with api_rig(tmp_path, files) as rig:
        winter = (await rig.get("/api/backup-tasks/1")).json()["data"]["schedule"]
        # London moves to summer time on 29 March 2026; the revision stays the same.
        rig.clock.advance(timedelta(days=20))
        summer = (await rig.get("/api/backup-tasks/1")).json()["data"]["schedule"]

    assert winter["scheduled_utc_time"] == "03:00"
    assert summer["scheduled_utc_time"] == "02:00"


async def test_a_token_revoked_by_another_process_is_refused_at_once(rig: ApiRig) -> None:
    headers = rig.auth()
    assert (await rig.client.get("/api/backup-tasks", headers=headers)).status_code == 200
    token = rig.state.tokens.list(1)[0]

    cli = open_state(rig.daemon.settings.state)
    try:
        assert cli.tokens.revoke_token(token.id)
    finally:
        cli.close()

    for path in ("/api/backup-tasks", "/api/backup-tasks/1"):
        assert (await rig.client.get(path, headers=headers)).status_code == 401


def _count_state_reads(rig: ApiRig, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """A list that grows by one for every call the API hands to its state reader's thread."""
    calls: list[object] = []
    reader = rig.daemon.reader
    run = reader.run

    async def counted(call: Callable[[], T]) -> T:
        calls.append(call)
        return await run(call)

    monkeypatch.setattr(reader, "run", counted)
    return calls


async def test_a_page_read_again_with_no_write_since_asks_the_state_store_nothing(
    rig: ApiRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await rig.get("/api/backup-tasks")
    calls = _count_state_reads(rig, monkeypatch)

    again = await rig.get("/api/backup-tasks")
    shown = await rig.get("/api/backup-tasks/1")
    shown_again = await rig.get("/api/backup-tasks/1")

    assert again.json() == first.json()
    assert shown.json() == shown_again.json()
    assert len(calls) == 1  # the show's run state, never read before


async def test_a_write_to_the_state_store_makes_the_next_read_ask_it_again(
    rig: ApiRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rig.get("/api/backup-tasks")
    calls = _count_state_reads(rig, monkeypatch)

    rig.state.runs.start_run(1, "cli", START)
    listed = (await rig.get("/api/backup-tasks")).json()["data"][0]

    assert listed["status"] == "running"
    assert len(calls) == 2  # the token, then the page's run states


@asynccontextmanager
async def _served(tmp: Path, token_use_interval: float) -> AsyncIterator[tuple[Path, str]]:
    """A running daemon writing token uses every `token_use_interval` seconds; yields its
    state file and a token, and the daemon has answered one request with it."""
    init_repo(tmp / "config", config_files())
    clock = FakeClock(START)
    wanted = dataclasses.replace(settings(tmp), token_use_interval=token_use_interval)
    async with daemon.running(wanted, clock=clock, environ={}) as running:
        _, token = running.state.tokens.create_token(1, "t", ["*"], clock.now())
        transport = httpx.ASGITransport(app=running.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            answer = await client.get(
                "/api/backup-tasks", headers={"Authorization": f"Bearer {token}"}
            )
            assert answer.status_code == 200
        yield Path(wanted.state), token


def _last_used(state: Path) -> list[object]:
    store = open_state(state)
    try:
        return [record.last_used_at for record in store.tokens.list(1)]
    finally:
        store.close()


async def test_a_tokens_use_reaches_the_state_store_within_the_write_interval(
    tmp_path: Path,
) -> None:
    interval = 0.3
    async with _served(tmp_path, interval) as (state, _token):
        started = time.monotonic()
        while _last_used(state) == [None] and time.monotonic() - started < FLUSH_SECONDS:
            await asyncio.sleep(0.05)
        waited = time.monotonic() - started

        assert _last_used(state) == [START]
        assert waited < interval + 5.0  # a bound on a loaded machine, far below the default


async def test_a_tokens_use_reaches_the_state_store_when_the_daemon_stops(tmp_path: Path) -> None:
    async with _served(tmp_path, FLUSH_SECONDS) as (state, _token):
        assert _last_used(state) == [None]

    assert _last_used(state) == [START]
