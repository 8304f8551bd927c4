"""POST /run: accepted, refused while paused or busy, and limited to 5 a minute per user."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from tests import configset
from tests.apirig import ApiRig, api_rig, config_files

pytestmark = pytest.mark.anyio


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ApiRig]:
    # A TCP port that accepts connections and never says a word: an SSH run there hangs until
    # the listener closes, which keeps the task (and its server) busy for the test.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        files = {
            **config_files(),
            "servers/one.yaml": configset.server(1, 1, port=listener.getsockname()[1]),
            "tasks/3-same-server.yaml": configset.task(3, 1),
            "tasks/4-paused.yaml": configset.task(4, 1, paused=True),
        }
        async with api_rig(tmp_path, files) as made:
            yield made
            listener.close()  # the hung run fails now, so closing the runner is quick


async def test_a_run_is_accepted_with_202(rig: ApiRig) -> None:
    response = await rig.post("/api/backup-tasks/1/run")
    assert response.status_code == 202
    assert response.json() == {"message": "Backup task initiated successfully."}
    assert (await rig.get("/api/backup-tasks/1/status")).json()["data"]["status"] == "running"


async def test_a_running_task_is_a_409(rig: ApiRig) -> None:
    await rig.post("/api/backup-tasks/1/run")
    response = await rig.post("/api/backup-tasks/1/run")
    assert response.status_code == 409
    assert response.json() == {"error": "Conflict", "message": "The task is already running."}


async def test_another_task_on_the_same_server_is_a_409(rig: ApiRig) -> None:
    await rig.post("/api/backup-tasks/1/run")
    response = await rig.post("/api/backup-tasks/3/run")
    assert response.status_code == 409
    assert response.json()["message"] == "Another task is running on the same remote server."


async def test_a_paused_task_is_a_409(rig: ApiRig) -> None:
    response = await rig.post("/api/backup-tasks/4/run")
    assert response.status_code == 409
    assert "paused" in response.json()["message"]


async def test_the_sixth_run_request_in_a_minute_is_a_429(rig: ApiRig) -> None:
    statuses = [(await rig.post("/api/backup-tasks/4/run")).status_code for _ in range(5)]
    assert statuses == [409] * 5
    response = await rig.post("/api/backup-tasks/4/run")
    assert response.status_code == 429
    assert response.json()["error"] == "Too Many Requests"
    assert response.headers["Retry-After"] == "60"
    rig.clock.advance(timedelta(seconds=59))
    assert (await rig.post("/api/backup-tasks/4/run")).status_code == 429
    rig.clock.advance(timedelta(seconds=1))
    assert (await rig.post("/api/backup-tasks/4/run")).status_code == 409


async def test_the_limit_is_per_user(rig: ApiRig) -> None:
    for _ in range(6):
        await rig.post("/api/backup-tasks/4/run")
    assert (await rig.post("/api/backup-tasks/2/run", user_id=2)).status_code == 202


async def test_another_users_task_cannot_be_run(rig: ApiRig) -> None:
    response = await rig.post("/api/backup-tasks/2/run")
    assert response.status_code == 404


async def test_a_scheduled_run_waiting_for_its_busy_server_shows_queued(rig: ApiRig) -> None:
    assert (await rig.post("/api/backup-tasks/1/run")).status_code == 202
    rig.daemon.fire(rig.engine.desired.tasks[3], rig.clock.now())  # same server: it waits

    for _ in range(200):
        status = (await rig.get("/api/backup-tasks/3/status")).json()["data"]["status"]
        if status != "ready":
            break
        await asyncio.sleep(0.05)
    assert status == "queued"
    latest = (await rig.get("/api/backup-tasks/3/latest-log")).json()["data"]
    assert latest["status"] == "queued"
    assert (await rig.get("/api/backup-tasks/1/status")).json()["data"]["status"] == "running"
    response = await rig.post("/api/backup-tasks/3/run")
    assert response.status_code == 409
    assert response.json()["message"] == "The task is already running."
