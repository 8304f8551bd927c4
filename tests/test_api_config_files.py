"""Hostile files committed by a person reach the API as config errors, never as a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests import configset
from tests.apirig import ApiRig, api_rig
from tests.gitrepo import commit_files, commit_symlink

pytestmark = pytest.mark.anyio


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ApiRig]:
    async with api_rig(tmp_path) as made:
        yield made


async def sync_errors(rig: ApiRig) -> list[dict[str, object]]:
    """The config errors an operator sees: a file refused unread belongs to no user."""
    _, token = rig.state.tokens.create_token(1, "ops", ["*"], rig.clock.now(), operator=True)
    response = await rig.client.get("/api/sync", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    errors: list[dict[str, object]] = response.json()["data"]["errors"]
    return errors


async def test_a_task_file_named_with_a_backslash_is_an_error_not_a_500(rig: ApiRig) -> None:
    commit_files(rig.repo, {"tasks/106-a\\b.yaml": configset.task(106)}, "a person's commit")
    await rig.engine.sync()
    listing = await rig.get("/api/backup-tasks")
    assert listing.status_code == 200
    assert [task["id"] for task in listing.json()["data"]] == [1, 7]
    assert (await rig.get("/api/backup-tasks/106")).status_code == 404
    (error,) = await sync_errors(rig)
    assert error["path"] == "tasks/106-a\\b.yaml"
    assert "backslash" in str(error["message"])


async def test_a_committed_link_is_listed_in_the_sync_errors(rig: ApiRig, tmp_path: Path) -> None:
    (tmp_path / "outside.yaml").write_text(configset.task(9))
    commit_symlink(rig.repo, "tasks/9.yaml", str(tmp_path / "outside.yaml"), "link")
    await rig.engine.sync()
    assert (await rig.get("/api/backup-tasks/9")).status_code == 404
    (error,) = await sync_errors(rig)
    assert (error["path"], error["line"]) == ("tasks/9.yaml", None)
    assert "symbolic link" in str(error["message"])


async def test_a_duplicate_key_is_in_the_sync_errors_and_the_last_good_task_is_served(
    rig: ApiRig,
) -> None:
    commit_files(rig.repo, {"tasks/1-first.yaml": configset.task(1) + "label: twice\n"}, "dup")
    await rig.engine.sync()
    shown = await rig.get("/api/backup-tasks/1")
    assert shown.json()["data"]["label"] == "task 1"
    (error,) = await sync_errors(rig)
    assert (error["path"], error["line"]) == ("tasks/1-first.yaml", 12)
    assert error["message"] == "duplicate key 'label' (first given on line 3)"
