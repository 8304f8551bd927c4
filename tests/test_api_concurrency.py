"""Many API writers at once: one commit per successful response, and a clean work tree after."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.apirig import ApiRig, api_rig
from tests.test_api_tasks import NEW_TASK

pytestmark = pytest.mark.anyio


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ApiRig]:
    async with api_rig(tmp_path) as made:
        yield made


async def test_fifty_concurrent_writers_make_one_commit_per_success(rig: ApiRig) -> None:
    before = len(rig.commits())
    requests = []
    for index in range(50):
        if index % 5 == 0:
            requests.append(rig.post("/api/backup-tasks", {**NEW_TASK, "label": f"new {index}"}))
        elif index % 5 == 1:
            requests.append(rig.put("/api/backup-tasks/1", {"label": f"label {index}"}))
        elif index % 5 == 2:
            requests.append(rig.put("/api/backup-tasks/7", {"maximum_backups_to_keep": index}))
        elif index % 5 == 3:
            requests.append(rig.put("/api/backup-tasks/7", {"time_to_run_at": "99:00"}))  # 422
        else:
            requests.append(rig.get("/api/backup-tasks"))
    responses = await asyncio.gather(*requests)
    writes = [r for r in responses if r.request.method in ("POST", "PUT")]
    succeeded = [r for r in writes if r.status_code in (200, 201)]
    assert {r.status_code for r in writes} <= {200, 201, 422}
    assert len(succeeded) == 30
    assert len(rig.commits()) - before == len(succeeded)
    assert rig.work_tree_status() == ""
    created = sorted(r.json()["data"]["id"] for r in responses if r.status_code == 201)
    assert created == list(range(8, 18))
    last_label = rig.engine.desired.tasks[1].task.label
    assert (await rig.get("/api/backup-tasks/1")).json()["data"]["label"] == last_label
