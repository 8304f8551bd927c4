"""A slow write never holds up other requests: parsing, editing and rendering run off the loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.apirig import ApiRig, api_rig
from tests.gitrepo import commit_files

pytestmark = pytest.mark.anyio

TASK = "tasks/1-first.yaml"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ApiRig]:
    async with api_rig(tmp_path) as made:
        yield made


async def test_requests_are_answered_while_a_large_task_file_is_edited(rig: ApiRig) -> None:
    # About 900 KB of comments: editing it takes a while, which once all ran on the event loop.
    notes = ("# " + "n" * 60 + "\n") * 14_000
    commit_files(rig.repo, {TASK: rig.file(TASK) + notes}, "a person's long notes")
    waits: list[float] = []

    async def ask_meanwhile() -> None:
        while True:
            started = time.perf_counter()
            await rig.get("/api/backup-tasks/upcoming")
            waits.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)

    asking = asyncio.create_task(ask_meanwhile())
    started = time.perf_counter()
    response = await rig.put("/api/backup-tasks/1", {"label": "edited"})
    took = time.perf_counter() - started
    asking.cancel()

    assert response.status_code == 200
    # Several answers during the edit, none waiting for much of it: a blocked loop answers
    # nothing until the edit is done, and then one request that waited for all of it.
    assert len(waits) >= 3, "the edit was too quick to show anything"
    assert max(waits) < took / 3
