"""Task ids come from the branch's history: never handed out twice, even with a new state store."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import configset
from tests.apirig import api_rig
from tests.gitrepo import commit_files
from tests.test_api_tasks import NEW_TASK

pytestmark = pytest.mark.anyio


async def test_an_id_is_not_reused_after_the_state_store_is_deleted(tmp_path: Path) -> None:
    async with api_rig(tmp_path) as rig:
        created = (await rig.post("/api/backup-tasks", NEW_TASK)).json()["data"]["id"]
        assert (await rig.delete(f"/api/backup-tasks/{created}")).status_code == 200
    (tmp_path / "state.db").unlink()

    async with api_rig(tmp_path, clone=True) as rig:
        again = (await rig.post("/api/backup-tasks", NEW_TASK)).json()["data"]["id"]

    assert again == created + 1


async def test_an_id_a_person_gave_a_deleted_file_is_not_reused(tmp_path: Path) -> None:
    async with api_rig(tmp_path) as rig:
        commit_files(rig.repo, {"tasks/db.yaml": configset.task(30, 1)}, "a person adds 30")
        commit_files(rig.repo, {"tasks/db.yaml": None}, "and deletes it")

        created = (await rig.post("/api/backup-tasks", NEW_TASK)).json()["data"]["id"]

    assert created == 31


async def test_ids_keep_counting_from_commits_made_after_the_first_walk(tmp_path: Path) -> None:
    async with api_rig(tmp_path) as rig:
        first = (await rig.post("/api/backup-tasks", NEW_TASK)).json()["data"]["id"]
        commit_files(rig.repo, {"tasks/40-by-hand.yaml": configset.task(40, 1)}, "person")
        commit_files(rig.repo, {"tasks/40-by-hand.yaml": None}, "person deletes 40")

        second = (await rig.post("/api/backup-tasks", NEW_TASK)).json()["data"]["id"]

    assert (first, second) == (8, 41)


async def test_an_id_declared_in_hex_by_a_deleted_file_is_not_reused(tmp_path: Path) -> None:
    async with api_rig(tmp_path) as rig:
        text = configset.task(48, 1).replace("id: 48", "id: 0x30")
        commit_files(rig.repo, {"tasks/db.yaml": text}, "a person adds 0x30")
        commit_files(rig.repo, {"tasks/db.yaml": None}, "and deletes it")

        created = (await rig.post("/api/backup-tasks", NEW_TASK)).json()["data"]["id"]

    assert created == 49


async def test_a_refused_create_uses_no_id(tmp_path: Path) -> None:
    async with api_rig(tmp_path) as rig:
        refused = await rig.post("/api/backup-tasks", {**NEW_TASK, "remote_server_id": 2})
        created = (await rig.post("/api/backup-tasks", NEW_TASK)).json()["data"]["id"]

    assert refused.status_code == 422
    assert created == 8
