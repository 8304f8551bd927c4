"""GET /api/backup-tasks/{id}/history: the commits that changed a task, a person's and the API's."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests import configset
from tests.apirig import COMMENTED_TASK, ApiRig, api_rig
from tests.gitrepo import append_commits, commit_files, head, rename

pytestmark = pytest.mark.anyio

SHOP = "tasks/shop/7-shop-database.yaml"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ApiRig]:
    async with api_rig(tmp_path) as made:
        yield made


async def history(rig: ApiRig, task_id: int, query: str = "") -> list[dict[str, object]]:
    response = await rig.get(f"/api/backup-tasks/{task_id}/history{query}")
    assert response.status_code == 200, response.text
    entries: list[dict[str, object]] = response.json()["data"]
    return entries


async def test_an_api_update_is_the_newest_entry_with_its_author_time_and_fields(
    rig: ApiRig,
) -> None:
    response = await rig.put("/api/backup-tasks/7", {"label": "Shop", "maximum_backups_to_keep": 9})
    assert response.status_code == 200
    newest, first = await history(rig, 7)
    assert newest == {
        "commit": head(rig.repo),
        "author_name": "Ada",
        "author_email": "ada@example.com",
        "committed_at": "2026-03-10T12:00:00Z",
        "message": newest["message"],
        "change": "updated",
        "fields": ["label", "storage.max_backups"],
    }
    assert str(newest["message"]).startswith("api: update backup task 7 (label, storage)")
    assert (first["message"], first["change"]) == ("initial\n", "created")


async def test_a_persons_edit_and_rename_are_followed_under_the_same_id(rig: ApiRig) -> None:
    edited = COMMENTED_TASK.replace('time: "03:00"', 'time: "04:00"')
    commit_files(rig.repo, {SHOP: edited}, "Later shop dumps")
    rename(rig.repo, SHOP, "tasks/7.yaml", "Flatten the tasks folder")
    await rig.engine.sync()
    entries = await history(rig, 7)
    assert [(e["message"], e["change"], e["fields"]) for e in entries] == [
        ("Flatten the tasks folder\n", "renamed", []),
        ("Later shop dumps\n", "updated", ["schedule.time"]),
        ("initial\n", "created", entries[-1]["fields"]),
    ]
    assert "source.excluded_tables" in entries[-1]["fields"]  # type: ignore[operator]


async def test_a_task_created_through_the_api_starts_with_that_commit(rig: ApiRig) -> None:
    body = {
        "remote_server_id": 1,
        "backup_destination_id": 1,
        "label": "Weekly /srv",
        "type": "files",
        "source_path": "/srv",
        "frequency": "weekly",
        "time_to_run_at": "02:00",
    }
    created = (await rig.post("/api/backup-tasks", body)).json()["data"]
    [entry] = await history(rig, created["id"])
    assert (entry["change"], entry["author_name"], entry["commit"]) == (
        "created",
        "Ada",
        head(rig.repo),
    )
    assert "label" in entry["fields"]  # type: ignore[operator]


async def test_a_comment_added_by_hand_is_an_update_of_no_fields(rig: ApiRig) -> None:
    commit_files(rig.repo, {SHOP: "# owned by the shop team\n" + COMMENTED_TASK}, "note")
    await rig.engine.sync()
    newest = (await history(rig, 7))[0]
    assert (newest["change"], newest["fields"]) == ("updated", [])


async def test_a_task_deleted_and_recreated_by_hand_shows_both_lives(rig: ApiRig) -> None:
    assert (await rig.delete("/api/backup-tasks/1")).status_code == 200
    commit_files(rig.repo, {"tasks/1-again.yaml": configset.task(1, label="again")}, "restore")
    await rig.engine.sync()
    entries = await history(rig, 1)
    assert [entry["change"] for entry in entries] == ["created", "deleted", "created"]
    assert str(entries[1]["message"]).startswith("api: delete backup task 1")


async def test_pages_of_history_use_the_logs_envelope(rig: ApiRig) -> None:
    edits = [
        {SHOP: COMMENTED_TASK.replace("max_backups: 4", f"max_backups: {n}")} for n in range(20)
    ]
    append_commits(rig.repo, edits, start=1_800_000_000)
    await rig.engine.sync()
    response = await rig.get("/api/backup-tasks/7/history?page=2&per_page=5")
    body = response.json()
    assert [entry["message"] for entry in body["data"]] == [f"edit {n}" for n in range(14, 9, -1)]
    assert body["data"][0]["committed_at"] == "2027-01-15T08:00:14Z"
    url = "http://testserver/api/backup-tasks/7/history"
    assert body["links"] == {
        "first": f"{url}?page=1&per_page=5",
        "last": f"{url}?page=5&per_page=5",
        "prev": f"{url}?page=1&per_page=5",
        "next": f"{url}?page=3&per_page=5",
    }
    assert body["meta"] == {
        "current_page": 2,
        "from": 6,
        "last_page": 5,
        "path": url,
        "per_page": 5,
        "to": 10,
        "total": 21,
    }


async def test_another_users_task_has_no_history_to_show(rig: ApiRig) -> None:
    response = await rig.get("/api/backup-tasks/2/history")
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found", "message": "Backup task not found"}


async def test_a_deleted_task_is_not_found_though_git_keeps_its_commits(rig: ApiRig) -> None:
    assert (await rig.delete("/api/backup-tasks/7")).status_code == 200
    assert (await rig.get("/api/backup-tasks/7/history")).status_code == 404


async def test_history_needs_a_token_that_may_view_tasks(rig: ApiRig) -> None:
    assert (await rig.client.get("/api/backup-tasks/7/history")).status_code == 401
    headers = rig.auth(1, ["run-backup-tasks"])
    response = await rig.client.get("/api/backup-tasks/7/history", headers=headers)
    assert response.status_code == 403


async def test_a_per_page_over_100_is_a_422(rig: ApiRig) -> None:
    response = await rig.get("/api/backup-tasks/7/history?per_page=101")
    assert response.status_code == 422
    assert list(response.json()["errors"]) == ["per_page"]


async def test_the_daemon_reads_the_history_in_the_background_at_start(rig: ApiRig) -> None:
    for _ in range(1000):  # up to 10 s on a loaded machine
        if rig.daemon.history.revision == rig.engine.revision:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the history was not read: {rig.daemon.history.revision}")
