"""The API tests drive the daemon as `reconciler serve` builds and starts it: its operational
routes and its scheduled fires are there too, not only the `/api` routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.apirig import ApiRig, api_rig

pytestmark = pytest.mark.anyio
FIRED_WITHIN = 30.0


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ApiRig]:
    async with api_rig(tmp_path) as made:
        yield made


async def test_healthz_names_the_applied_revision(rig: ApiRig) -> None:
    response = await rig.client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "revision": rig.engine.revision}


async def test_metrics_count_the_running_schedules_tasks(rig: ApiRig) -> None:
    response = await rig.client.get("/metrics")

    assert response.status_code == 200
    assert 'reconciler_tasks{state="active"} 3.0' in response.text


async def test_a_slot_that_comes_is_fired_and_remembered(rig: ApiRig) -> None:
    slot = rig.daemon.scheduler.next_fire(1)
    assert slot is not None
    rig.clock.advance(slot - rig.clock.now())
    rig.daemon.scheduler.wake()

    deadline = time.monotonic() + FIRED_WITHIN
    while rig.state.schedule.last_fired().get(1) != slot:
        assert time.monotonic() < deadline, "the slot was never fired"
        await asyncio.sleep(0.01)
    await asyncio.to_thread(rig.runner.wait, 1, FIRED_WITHIN)
    latest = rig.state.runs.latest_run(1)
    assert latest is not None
    assert latest.trigger == "schedule"
