"""The backup-task endpoints against a real config repository: reads, and writes as git commits."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reconciler.models import SecretRef
from reconciler.types import RunKind, RunStatus
from tests.apirig import COMMENTED_TASK, START, ApiRig, api_rig
from tests.gitrepo import commit_files, git

pytestmark = pytest.mark.anyio

NEW_TASK: dict[str, Any] = {
    "remote_server_id": 1,
    "backup_destination_id": 1,
    "label": "Weekly Full Backup",
    "description": "Full backup of all files",
    "source_path": "/home",
    "frequency": "weekly",
    "maximum_backups_to_keep": 4,
    "type": "files",
    "time_to_run_at": "02:00",
    "store_path": "/backups/weekly",
}


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ApiRig]:
    async with api_rig(tmp_path) as made:
        yield made


# Reading


async def test_the_list_shows_only_the_callers_tasks_in_the_documented_envelope(
    rig: ApiRig,
) -> None:
    response = await rig.get("/api/backup-tasks")
    assert response.status_code == 200
    body = response.json()
    assert [task["id"] for task in body["data"]] == [1, 7]
    assert body["links"] == {
        "first": "http://testserver/api/backup-tasks?page=1",
        "last": "http://testserver/api/backup-tasks?page=1",
        "prev": None,
        "next": None,
    }
    assert body["meta"] == {
        "current_page": 1,
        "from": 1,
        "last_page": 1,
        "path": "http://testserver/api/backup-tasks",
        "per_page": 15,
        "to": 2,
        "total": 2,
    }


async def test_pages_link_to_each_other_with_absolute_urls(rig: ApiRig) -> None:
    response = await rig.get("/api/backup-tasks", params={"per_page": 1, "page": 2})
    body = response.json()
    assert [task["id"] for task in body["data"]] == [7]
    assert body["links"] == {
        "first": "http://testserver/api/backup-tasks?page=1&per_page=1",
        "last": "http://testserver/api/backup-tasks?page=2&per_page=1",
        "prev": "http://testserver/api/backup-tasks?page=1&per_page=1",
        "next": None,
    }
    assert body["meta"]["from"] == 2
    assert body["meta"]["to"] == 2
    assert body["meta"]["last_page"] == 2


async def test_a_page_past_the_end_is_empty(rig: ApiRig) -> None:
    body = (await rig.get("/api/backup-tasks", params={"page": 5})).json()
    assert body["data"] == []
    assert body["meta"]["from"] is None
    assert body["meta"]["to"] is None


@pytest.mark.parametrize("per_page", ["0", "101", "many"])
async def test_a_per_page_outside_1_to_100_is_a_422_naming_per_page(
    rig: ApiRig, per_page: str
) -> None:
    response = await rig.get("/api/backup-tasks", params={"per_page": per_page})
    assert response.status_code == 422
    assert list(response.json()["errors"]) == ["per_page"]


async def test_a_task_shows_every_v2_field_with_real_values(rig: ApiRig) -> None:
    response = await rig.get("/api/backup-tasks/7")
    assert response.status_code == 200
    task = response.json()["data"]
    created = git(rig.repo, "log", "-1", "--format=%ct").strip()
    assert task == {
        "id": 7,
        "user_id": 1,
        "remote_server_id": 1,
        "backup_destination_id": 1,
        "label": "Shop database",
        "description": None,
        "source": {
            "path": None,
            "type": "database",
            "database_name": "shop",
            "excluded_tables": "sessions,cache",
        },
        "schedule": {
            "frequency": "weekly",
            "scheduled_utc_time": "02:00",  # 03:00 in Paris (UTC+1 in March)
            "scheduled_local_time": "02:00",  # the owner is in London (GMT in March)
            "custom_cron": None,
        },
        "storage": {"max_backups": 4, "appended_filename": None, "path": "/shop"},
        "notification_streams_count": 1,
        "status": "ready",
        "has_isolated_credentials": False,
        "has_encryption_password": False,
        "last_run_local_time": None,
        "last_run_utc_time": None,
        "paused_at": None,
        "created_at": task["created_at"],
        "updated_at": task["updated_at"],
    }
    committed = datetime.fromtimestamp(int(created), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert task["created_at"] == task["updated_at"] == committed  # git's time, not the clock's


async def test_scheduled_local_time_is_in_the_owners_timezone(rig: ApiRig) -> None:
    task = (await rig.get("/api/backup-tasks/2", user_id=2)).json()["data"]
    # 02:30 UTC is 22:30 the evening before in New York (EDT since 8 March 2026).
    assert task["schedule"]["scheduled_utc_time"] == "02:30"
    assert task["schedule"]["scheduled_local_time"] == "22:30"


async def test_last_run_times_come_from_the_history_in_utc_and_local_time(rig: ApiRig) -> None:
    run_id = rig.state.runs.start_run(2, "schedule", START)
    rig.state.runs.finish_run(run_id, RunStatus.SUCCESSFUL, START)
    task = (await rig.get("/api/backup-tasks/2", user_id=2)).json()["data"]
    assert task["last_run_utc_time"] == "2026-03-10T12:00:00Z"
    assert task["last_run_local_time"] == "2026-03-10 08:00:00"


@pytest.mark.parametrize("task_id", ["2", "999", "abc", "7.0", "-7", "1e3", "00000000000000000007"])
async def test_a_missing_foreign_or_malformed_id_is_the_same_404(rig: ApiRig, task_id: str) -> None:
    response = await rig.get(f"/api/backup-tasks/{task_id}")
    assert response.status_code == 404
    assert response.json() == {"error": "Not Found", "message": "Backup task not found"}


async def test_status_says_ready_or_running(rig: ApiRig) -> None:
    assert (await rig.get("/api/backup-tasks/1/status")).json() == {
        "data": {"id": 1, "status": "ready"}
    }
    rig.state.runs.start_run(1, "manual", START)
    assert (await rig.get("/api/backup-tasks/1/status")).json()["data"]["status"] == "running"


async def test_latest_log_without_runs_is_a_404_with_the_documented_message(rig: ApiRig) -> None:
    response = await rig.get("/api/backup-tasks/1/latest-log")
    assert response.status_code == 404
    assert response.json() == {
        "error": "Not Found",
        "message": "No logs found for this backup task.",
    }


async def test_latest_log_is_the_newest_run(rig: ApiRig) -> None:
    first = rig.state.runs.start_run(1, "schedule", START)
    rig.state.runs.finish_run(first, RunStatus.FAILED, START, reason="boom")
    second = rig.state.runs.start_run(1, "manual", START)
    rig.state.runs.append_logs(second, [(START, "dumped 3 files")])
    rig.state.runs.finish_run(
        second, RunStatus.SUCCESSFUL, START, size=42, backup_name="b.tar", sha256="ab" * 32
    )
    log = (await rig.get("/api/backup-tasks/1/latest-log")).json()["data"]
    assert log == {
        "id": second,
        "backup_task_id": 1,
        "output": "2026-03-10T12:00:00Z dumped 3 files\n",
        "finished_at": "2026-03-10T12:00:00Z",
        "status": "successful",
        "created_at": "2026-03-10T12:00:00Z",
        "kind": "backup",
        "size": 42,
        "sha256": "ab" * 32,
        "restic": None,
    }


async def test_a_restore_drill_shows_in_the_logs_as_a_verify_run(rig: ApiRig) -> None:
    drill = rig.state.runs.start_run(1, "schedule", START, RunKind.VERIFY)
    rig.state.runs.finish_run(drill, RunStatus.FAILED, START, reason="sha256 differs")
    log = (await rig.get("/api/backup-tasks/1/logs")).json()["data"][0]
    assert (log["id"], log["kind"], log["status"], log["sha256"]) == (
        drill,
        "verify",
        "failed",
        None,
    )


async def test_logs_are_paginated_newest_first(rig: ApiRig) -> None:
    ids = []
    for _ in range(3):
        ids.append(rig.state.runs.start_run(1, "schedule", START))
        rig.state.runs.finish_run(ids[-1], RunStatus.SUCCESSFUL, START)
    body = (await rig.get("/api/backup-tasks/1/logs", params={"per_page": 2})).json()
    assert [log["id"] for log in body["data"]] == [ids[2], ids[1]]
    assert body["meta"]["total"] == 3
    assert body["links"]["next"] == "http://testserver/api/backup-tasks/1/logs?page=2&per_page=2"


async def test_upcoming_lists_the_callers_next_runs_soonest_first(rig: ApiRig) -> None:
    body = (await rig.get("/api/backup-tasks/upcoming")).json()
    assert body == {
        "data": [
            {
                "id": 1,
                "label": "task 1",
                "next_run_utc_time": "2026-03-11T02:30:00Z",
                "next_run_local_time": "2026-03-11 02:30:00",
            },
            {
                "id": 7,
                "label": "Shop database",
                "next_run_utc_time": "2026-03-15T02:00:00Z",
                "next_run_local_time": "2026-03-15 02:00:00",
            },
        ]
    }


async def test_sync_reports_the_applied_revision_and_config_errors(rig: ApiRig) -> None:
    body = (await rig.get("/api/sync")).json()["data"]
    assert body["revision"] == git(rig.repo, "rev-parse", "HEAD").strip()
    assert body["tasks"] == 2  # the caller's own: tasks 1 and 7
    assert body["errors"] == []
    assert body["reconciled_at"] == "2026-03-10T12:00:00Z"


async def test_sync_lists_the_nodes_sharing_the_state_store(rig: ApiRig) -> None:
    seen = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    rig.state.nodes.heartbeat("backup-2", "ab" * 20, seen, seen, seen)
    nodes = (await rig.get("/api/sync")).json()["data"]["nodes"]
    assert {
        "id": "backup-2",
        "revision": "ab" * 20,
        "revision_time": "2026-03-10T12:00:00Z",
        "last_seen": "2026-03-10T12:00:00Z",
    } in nodes


# Creating


async def test_create_commits_a_new_file_and_returns_the_resource(rig: ApiRig) -> None:
    response = await rig.post("/api/backup-tasks", NEW_TASK)
    assert response.status_code == 201
    task = response.json()["data"]
    assert task["id"] == 8
    assert task["label"] == "Weekly Full Backup"
    assert task["schedule"] == {
        "frequency": "weekly",
        "scheduled_utc_time": "02:00",
        "scheduled_local_time": "02:00",
        "custom_cron": None,
    }
    assert task["storage"] == {
        "max_backups": 4,
        "appended_filename": None,
        "path": "/backups/weekly",
    }
    assert task["created_at"] is not None
    assert rig.file("tasks/8-weekly-full-backup.yaml") == (
        "id: 8\nuser_id: 1\nlabel: Weekly Full Backup\ndescription: Full backup of all files\n"
        "remote_server_id: 1\nbackup_destination_id: 1\nsource:\n  type: files\n  path: /home\n"
        'schedule:\n  frequency: weekly\n  time: "02:00"\nstorage:\n  max_backups: 4\n'
        "  path: backups/weekly\n"
    )
    assert rig.commits()[0] == "api: create backup task 8 (Weekly Full Backup)"
    author = git(rig.repo, "log", "-1", "--format=%an <%ae>").strip()
    assert author == "Ada <ada@example.com>"
    assert rig.work_tree_status() == ""


async def test_a_created_task_is_running_before_the_response(rig: ApiRig) -> None:
    created = (await rig.post("/api/backup-tasks", NEW_TASK)).json()["data"]
    assert created["id"] in rig.engine.desired.tasks
    assert rig.engine.next_fire(created["id"]) is not None
    shown = await rig.get(f"/api/backup-tasks/{created['id']}")
    assert shown.json()["data"] == created


async def test_ids_are_never_reused_after_a_delete(rig: ApiRig) -> None:
    first = (await rig.post("/api/backup-tasks", NEW_TASK)).json()["data"]["id"]
    assert (await rig.delete(f"/api/backup-tasks/{first}")).status_code == 200
    second = (await rig.post("/api/backup-tasks", NEW_TASK)).json()["data"]["id"]
    assert second == first + 1


async def test_a_database_task_with_a_cron_and_excluded_tables(rig: ApiRig) -> None:
    body = {
        "remote_server_id": 1,
        "backup_destination_id": 1,
        "label": "Orders",
        "type": "database",
        "database_name": "orders",
        "excluded_database_tables": "logs, cache",
        "custom_cron_expression": "0 */4 * * *",
        "notification_stream_ids": [1],
    }
    task = (await rig.post("/api/backup-tasks", body)).json()["data"]
    assert task["source"]["excluded_tables"] == "logs,cache"
    assert task["schedule"]["custom_cron"] == "0 */4 * * *"
    assert task["schedule"]["scheduled_utc_time"] is None
    assert task["notification_streams_count"] == 1
    text = rig.file("tasks/8-orders.yaml")
    assert "  excluded_tables: [logs, cache]\n" in text
    assert rig.engine.desired.tasks[8].task.schedule.custom_cron == "0 */4 * * *"


async def test_a_secret_goes_to_the_store_and_never_into_git_or_a_response(rig: ApiRig) -> None:
    body = {**NEW_TASK, "encryption_password": "hunter2-secret", "isolated_username": "backup"}
    body["isolated_password"] = "isolated-secret"
    response = await rig.post("/api/backup-tasks", body)
    assert response.status_code == 201
    assert "secret" not in response.text.replace("has_", "")
    task = response.json()["data"]
    assert task["has_encryption_password"] is True
    assert task["has_isolated_credentials"] is True
    resolved = rig.engine.desired.tasks[task["id"]].task
    assert resolved.encryption_password is not None
    assert rig.secrets.resolve(resolved.encryption_password) == "hunter2-secret"
    assert resolved.isolated_password is not None
    assert rig.secrets.resolve(resolved.isolated_password) == "isolated-secret"
    history = git(rig.repo, "log", "-p", "--all")
    assert "hunter2" not in history
    assert "isolated-secret" not in history
    assert stat.S_IMODE(rig.secrets_path.stat().st_mode) == 0o600


async def test_a_server_of_another_user_is_refused_and_nothing_is_written(rig: ApiRig) -> None:
    before = rig.commits()
    response = await rig.post("/api/backup-tasks", {**NEW_TASK, "remote_server_id": 2})
    assert response.status_code == 422
    assert response.json() == {
        "message": "The given data was invalid.",
        "errors": {"remote_server_id": ["The selected remote server id is invalid."]},
    }
    assert rig.commits() == before


async def test_unknown_notification_streams_are_named_by_position(rig: ApiRig) -> None:
    response = await rig.post("/api/backup-tasks", {**NEW_TASK, "notification_stream_ids": [1, 2]})
    assert response.status_code == 422
    assert response.json()["errors"] == {
        "notification_stream_ids.1": ["The selected notification stream id is invalid."]
    }


# Updating


async def test_update_changes_only_the_given_fields_and_keeps_comments(rig: ApiRig) -> None:
    path = "tasks/shop/7-shop-database.yaml"
    response = await rig.put(
        "/api/backup-tasks/7", {"label": "Shop DB", "maximum_backups_to_keep": 6}
    )
    assert response.status_code == 200
    assert response.json()["data"]["label"] == "Shop DB"
    assert rig.file(path) == COMMENTED_TASK.replace(
        "label: 'Shop database'   #", "label: 'Shop DB'         #"
    ).replace("max_backups: 4   #", "max_backups: 6   #")
    assert rig.commits()[0] == "api: update backup task 7 (label, storage)"
    assert rig.engine.desired.tasks[7].task.label == "Shop DB"


async def test_a_new_utc_time_sets_the_files_timezone_to_utc(rig: ApiRig) -> None:
    response = await rig.put("/api/backup-tasks/7", {"time_to_run_at": "04:15"})
    schedule = response.json()["data"]["schedule"]
    assert schedule["scheduled_utc_time"] == "04:15"
    text = rig.file("tasks/shop/7-shop-database.yaml")
    assert '  time: "04:15"\n  timezone: UTC\n' in text
    assert "# When: after the nightly import\n" in text


async def test_the_commit_names_a_timezone_the_utc_time_replaced(rig: ApiRig) -> None:
    await rig.put("/api/backup-tasks/7", {"time_to_run_at": "04:15"})
    assert rig.commits()[0] == "api: update backup task 7 (schedule; timezone Europe/Paris -> UTC)"


async def test_sending_back_the_shown_time_changes_nothing(rig: ApiRig) -> None:
    before = rig.commits()
    response = await rig.put(
        "/api/backup-tasks/7", {"time_to_run_at": "02:00", "frequency": "weekly"}
    )
    assert response.status_code == 200
    assert rig.commits() == before
    assert "Europe/Paris" in rig.file("tasks/shop/7-shop-database.yaml")


async def test_switching_to_daily_drops_the_weekday(rig: ApiRig) -> None:
    await rig.put("/api/backup-tasks/7", {"frequency": "daily"})
    text = rig.file("tasks/shop/7-shop-database.yaml")
    assert "weekday" not in text
    assert "  frequency: daily\n" in text


async def test_switching_to_a_cron_replaces_the_time(rig: ApiRig) -> None:
    response = await rig.put("/api/backup-tasks/1", {"custom_cron_expression": "15 1 * * 1-5"})
    assert response.json()["data"]["schedule"] == {
        "frequency": None,
        "scheduled_utc_time": None,
        "scheduled_local_time": None,
        "custom_cron": "15 1 * * 1-5",
    }


async def test_clearing_an_optional_field_removes_it_from_the_file(rig: ApiRig) -> None:
    await rig.put("/api/backup-tasks/7", {"excluded_database_tables": None})
    assert "excluded_tables" not in rig.file("tasks/shop/7-shop-database.yaml")


async def test_replacing_a_secret_forgets_the_old_one(rig: ApiRig) -> None:
    await rig.put("/api/backup-tasks/1", {"encryption_password": "first-pass"})
    old_ref = rig.engine.desired.tasks[1].task.encryption_password
    await rig.put("/api/backup-tasks/1", {"encryption_password": "second-pass"})
    new_ref = rig.engine.desired.tasks[1].task.encryption_password
    assert new_ref is not None
    assert old_ref is not None
    assert rig.secrets.resolve(new_ref) == "second-pass"
    assert old_ref.secret is not None
    assert old_ref.secret not in rig.secrets_path.read_text()


async def test_a_failed_write_leaves_the_secret_in_use_untouched(rig: ApiRig) -> None:
    await rig.put("/api/backup-tasks/1", {"encryption_password": "first-pass"})
    ref = rig.engine.desired.tasks[1].task.encryption_password
    (rig.repo / "tasks/1-first.yaml").write_text("id: 1\n# local edit\n")
    response = await rig.put("/api/backup-tasks/1", {"encryption_password": "second-pass"})
    assert response.status_code == 409
    assert ref is not None
    assert rig.secrets.resolve(ref) == "first-pass"
    assert "second-pass" not in rig.secrets_path.read_text()


async def test_an_uncommitted_local_edit_is_a_409_and_nothing_is_written(rig: ApiRig) -> None:
    path = rig.repo / "tasks/1-first.yaml"
    path.write_text(path.read_text() + "# someone is editing\n")
    before = rig.commits()
    response = await rig.put("/api/backup-tasks/1", {"label": "new"})
    assert response.status_code == 409
    assert response.json()["error"] == "Conflict"
    assert "uncommitted" in response.json()["message"]
    assert rig.commits() == before
    assert path.read_text().endswith("# someone is editing\n")


async def test_an_update_sees_a_commit_made_by_a_person_just_before(rig: ApiRig) -> None:
    text = rig.file("tasks/1-first.yaml").replace("task 1", "renamed by hand")
    commit_files(rig.repo, {"tasks/1-first.yaml": text}, "by hand")
    response = await rig.put("/api/backup-tasks/1", {"description": "added by the API"})
    assert response.json()["data"]["label"] == "renamed by hand"
    assert "label: renamed by hand\n" in rig.file("tasks/1-first.yaml")


async def test_an_update_keeps_the_fields_only_yaml_knows(rig: ApiRig) -> None:
    yaml_only = "storage:\n  compression: none\nrun_timeout_seconds: 600\n"
    text = rig.file("tasks/1-first.yaml") + yaml_only
    commit_files(rig.repo, {"tasks/1-first.yaml": text}, "store task 1 uncompressed")
    response = await rig.put("/api/backup-tasks/1", {"maximum_backups_to_keep": 9})
    assert response.status_code == 200
    text = rig.file("tasks/1-first.yaml")
    assert "storage:\n  max_backups: 9\n  compression: none\nrun_timeout_seconds: 600\n" in text
    task = rig.engine.desired.tasks[1].task
    assert (task.storage.compression.value, task.storage.max_backups) == ("none", 9)


async def test_an_invalid_update_names_the_request_field_and_writes_nothing(rig: ApiRig) -> None:
    before = rig.commits()
    response = await rig.put("/api/backup-tasks/7", {"store_path": "../escape"})
    assert response.status_code == 422
    assert list(response.json()["errors"]) == ["store_path"]
    assert rig.commits() == before


async def test_another_users_task_cannot_be_updated(rig: ApiRig) -> None:
    response = await rig.put("/api/backup-tasks/2", {"label": "mine now"})
    assert response.status_code == 404
    assert response.json()["message"] == "Backup task not found"


# Deleting


async def test_delete_removes_the_file_in_one_commit(rig: ApiRig) -> None:
    response = await rig.delete("/api/backup-tasks/7")
    assert response.status_code == 200
    assert response.json() == {"message": "Backup task successfully deleted"}
    assert not (rig.repo / "tasks/shop/7-shop-database.yaml").exists()
    assert rig.commits()[0] == "api: delete backup task 7 (Shop database)"
    assert 7 not in rig.engine.desired.tasks
    assert (await rig.get("/api/backup-tasks/7")).status_code == 404


async def test_deleting_a_task_forgets_its_api_secrets(rig: ApiRig) -> None:
    await rig.put("/api/backup-tasks/1", {"encryption_password": "pass"})
    ref = rig.engine.desired.tasks[1].task.encryption_password
    await rig.delete("/api/backup-tasks/1")
    assert isinstance(ref, SecretRef)
    assert ref.secret is not None
    assert ref.secret not in rig.secrets_path.read_text()
