"""`Idempotency-Key`: a retried write returns the first answer and never commits twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apirig import ApiRig, api_rig
from tests.test_api_tasks import NEW_TASK

pytestmark = pytest.mark.anyio


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ApiRig]:
    async with api_rig(tmp_path) as made:
        yield made


async def _send(
    rig: ApiRig, method: str, url: str, key: str, body: Any = None, user_id: int = 1
) -> httpx.Response:
    headers = {**rig.auth(user_id), "Idempotency-Key": key}
    return await rig.client.request(method, url, json=body, headers=headers)


async def test_a_retried_create_returns_the_first_answer_and_commits_once(rig: ApiRig) -> None:
    before = len(rig.commits())
    first = await _send(rig, "POST", "/api/backup-tasks", "create-1", NEW_TASK)
    again = await _send(rig, "POST", "/api/backup-tasks", "create-1", NEW_TASK)

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert len(rig.commits()) == before + 1


async def test_the_same_key_with_another_body_is_a_422(rig: ApiRig) -> None:
    await _send(rig, "POST", "/api/backup-tasks", "k", NEW_TASK)
    other = await _send(rig, "POST", "/api/backup-tasks", "k", {**NEW_TASK, "label": "other"})

    assert other.status_code == 422
    assert list(other.json()["errors"]) == ["Idempotency-Key"]


async def test_a_key_is_forgotten_after_24_hours(rig: ApiRig) -> None:
    before = len(rig.commits())
    await _send(rig, "POST", "/api/backup-tasks", "k", NEW_TASK)
    rig.clock.advance(timedelta(hours=24, seconds=1))
    later = await _send(rig, "POST", "/api/backup-tasks", "k", NEW_TASK)

    assert later.status_code == 201
    assert len(rig.commits()) == before + 2


async def test_keys_belong_to_their_user(rig: ApiRig) -> None:
    one = await _send(rig, "PUT", "/api/backup-tasks/1", "k", {"label": "one"})
    two = await _send(rig, "PUT", "/api/backup-tasks/2", "k", {"label": "two"}, user_id=2)

    assert one.status_code == two.status_code == 200
    assert two.json()["data"]["label"] == "two"


async def test_a_retried_delete_answers_as_the_first_did(rig: ApiRig) -> None:
    first = await _send(rig, "DELETE", "/api/backup-tasks/1", "del")
    again = await _send(rig, "DELETE", "/api/backup-tasks/1", "del")

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()


async def test_a_commit_whose_answer_was_lost_is_found_in_git_history(tmp_path: Path) -> None:
    async with api_rig(tmp_path) as rig:
        first = await _send(rig, "POST", "/api/backup-tasks", "lost", NEW_TASK)
        commits = len(rig.commits())
    (tmp_path / "state.db").unlink()  # as if killed before the answer was stored

    async with api_rig(tmp_path, clone=True) as rig:
        again = await _send(rig, "POST", "/api/backup-tasks", "lost", NEW_TASK)
        assert len(rig.commits()) == commits

    assert again.status_code == 201
    assert again.json()["data"]["id"] == first.json()["data"]["id"]


async def test_a_failed_write_is_not_remembered(rig: ApiRig) -> None:
    refused = await _send(
        rig, "POST", "/api/backup-tasks", "k", {**NEW_TASK, "time_to_run_at": "9"}
    )
    assert refused.status_code == 422
    accepted = await _send(rig, "POST", "/api/backup-tasks", "k", NEW_TASK)
    assert accepted.status_code == 201


@pytest.mark.parametrize("key", ["", "x" * 256, "with space", "tab\there"])
async def test_a_malformed_key_is_a_422(rig: ApiRig, key: str) -> None:
    response = await _send(rig, "POST", "/api/backup-tasks", key, NEW_TASK)
    assert response.status_code == 422
