"""A person's commit made while an API write is being prepared is never reverted by it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.apirig import ApiRig, api_rig
from tests.gitrepo import commit_files, person_sets_max_backups

pytestmark = pytest.mark.anyio

TASK = "tasks/shop/7-shop-database.yaml"
ROUNDS = 6


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ApiRig]:
    async with api_rig(tmp_path) as made:
        yield made


async def test_a_persons_concurrent_commit_to_the_same_file_is_never_reverted(
    rig: ApiRig, caplog: pytest.LogCaptureFixture
) -> None:
    # A long comment makes the API's edit take long enough for the person to commit inside it.
    commit_files(rig.repo, {TASK: rig.file(TASK) + "# note\n" * 20_000}, "person: notes")
    caplog.set_level(logging.INFO, logger="reconciler.api")
    both_kept = 0
    for round_ in range(ROUNDS):
        person = asyncio.create_task(
            asyncio.to_thread(person_sets_max_backups, rig.repo, TASK, 100 + round_)
        )
        response = await rig.put("/api/backup-tasks/7", {"label": f"api {round_}"})
        await person
        assert response.status_code in (200, 409), response.text
        text = rig.file(TASK)
        assert f"max_backups: {100 + round_}" in text, f"round {round_}: the person's edit was lost"
        if response.status_code == 200:
            assert f"label: api {round_}" in text or f"label: 'api {round_}'" in text
            both_kept += 1
        assert rig.work_tree_status() == ""
    prepared_again = [r for r in caplog.records if "preparing it again" in r.getMessage()]
    assert both_kept > 0, "no round answered 200"
    assert prepared_again, "no round had the branch move under it: the race was never run"
