"""`GET /api/sync` per tenant: a user's token sees its own files' errors and tasks; an operator's
token sees everything, including files that belong to no user."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests import configset
from tests.apirig import ApiRig, api_rig, config_files
from tests.gitrepo import commit_files

pytestmark = pytest.mark.anyio

# User 2's new file, broken before it was ever good: its own `user_id` says whose it is.
GRACE_BROKEN = configset.task(3, 2).replace("time: 02:30", "time: '25:00'")
# Parses to nothing at all: no user can be read from it.
UNREADABLE = "id: 4\nlabel: [unclosed\n"
USERS_WITH_A_TYPO = configset.USERS + "- id: 3\n  name: Typo\n  email: typo@example.com\n  tz: x\n"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ApiRig]:
    files = {
        **config_files(),
        "tasks/3-grace-broken.yaml": GRACE_BROKEN,
        "tasks/4-unreadable.yaml": UNREADABLE,
        "users.yaml": USERS_WITH_A_TYPO,
    }
    async with api_rig(tmp_path, files) as made:
        yield made


def error_paths(body: dict[str, Any]) -> list[str]:
    return sorted({error["path"] for error in body["data"]["errors"]})


async def operator_sync(rig: ApiRig) -> dict[str, Any]:
    _, token = rig.state.tokens.create_token(1, "ops", ["*"], rig.clock.now(), operator=True)
    response = await rig.client.get("/api/sync", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


async def test_a_users_token_sees_only_the_errors_of_its_own_files(rig: ApiRig) -> None:
    ada = (await rig.get("/api/sync", user_id=1)).json()
    grace = (await rig.get("/api/sync", user_id=2)).json()

    assert error_paths(ada) == []
    assert error_paths(grace) == ["tasks/3-grace-broken.yaml"]
    assert "'25:00'" in grace["data"]["errors"][0]["message"]


async def test_a_users_token_counts_only_its_own_tasks(rig: ApiRig) -> None:
    assert (await rig.get("/api/sync", user_id=1)).json()["data"]["tasks"] == 2
    assert (await rig.get("/api/sync", user_id=2)).json()["data"]["tasks"] == 1


async def test_a_broken_file_belongs_to_the_user_of_its_last_good_version(rig: ApiRig) -> None:
    commit_files(rig.repo, {"tasks/2-grace.yaml": "id: 2\nuser_id: [\n"}, "break grace's task")
    await rig.engine.sync()

    assert error_paths((await rig.get("/api/sync", user_id=2)).json()) == [
        "tasks/2-grace.yaml",
        "tasks/3-grace-broken.yaml",
    ]
    assert error_paths((await rig.get("/api/sync", user_id=1)).json()) == []


async def test_an_operator_token_sees_every_error_and_every_task(rig: ApiRig) -> None:
    body = await operator_sync(rig)

    assert error_paths(body) == [
        "tasks/3-grace-broken.yaml",
        "tasks/4-unreadable.yaml",
        "users.yaml",
    ]
    assert body["data"]["tasks"] == 3


async def test_files_that_belong_to_no_user_are_shown_only_to_operators(rig: ApiRig) -> None:
    for user_id in (1, 2):
        shown = error_paths((await rig.get("/api/sync", user_id=user_id)).json())
        assert "users.yaml" not in shown
        assert "tasks/4-unreadable.yaml" not in shown


async def test_an_id_clash_does_not_name_another_users_file(rig: ApiRig) -> None:
    clash = configset.task(1, 2, label="grace's secret project")
    commit_files(rig.repo, {"tasks/grace/1-clash.yaml": clash}, "grace reuses id 1")
    await rig.engine.sync()

    grace = (await rig.get("/api/sync", user_id=2)).json()

    (error,) = [e for e in grace["data"]["errors"] if e["path"] == "tasks/grace/1-clash.yaml"]
    assert "tasks/1-first.yaml" not in error["message"]
    assert "another user" in error["message"]
