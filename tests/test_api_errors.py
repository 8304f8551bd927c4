"""Every failure has one shape, and no input makes the server fail (schemathesis fuzzing)."""

from __future__ import annotations

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


@pytest.mark.parametrize("header", [None, "Bearer rk_not-a-token", "Basic dXNlcjpwYXNz"])
async def test_a_missing_or_bad_token_is_a_401(rig: ApiRig, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    response = await rig.client.get("/api/backup-tasks", headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized", "message": "Unauthenticated."}


async def test_a_token_without_the_ability_is_a_403(rig: ApiRig) -> None:
    headers = rig.auth(1, ["view-backup-tasks"])
    response = await rig.client.delete("/api/backup-tasks/1", headers=headers)
    assert response.status_code == 403
    assert response.json() == {
        "error": "Forbidden",
        "message": "This token does not have the 'delete-backup-tasks' ability.",
    }


async def test_a_token_with_the_ability_may_act(rig: ApiRig) -> None:
    headers = rig.auth(1, ["view-backup-tasks"])
    assert (await rig.client.get("/api/backup-tasks/1", headers=headers)).status_code == 200


async def test_a_revoked_token_is_a_401(rig: ApiRig) -> None:
    headers = rig.auth(1)
    token = rig.state.tokens.list(1)[0]
    rig.state.tokens.revoke_token(token.id)
    assert (await rig.client.get("/api/backup-tasks", headers=headers)).status_code == 401


async def test_malformed_json_is_a_400(rig: ApiRig) -> None:
    response = await rig.client.post(
        "/api/backup-tasks",
        content=b'{"label": ',
        headers={**rig.auth(1), "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "Bad Request",
        "message": "The request body is not valid JSON.",
    }


async def test_missing_required_fields_are_named_as_the_client_names_them(rig: ApiRig) -> None:
    response = await rig.post("/api/backup-tasks", {"label": "x"})
    assert response.status_code == 422
    body = response.json()
    assert body["message"] == "The given data was invalid."
    assert body["errors"] == {
        "remote_server_id": ["The remote server id field is required."],
        "backup_destination_id": ["The backup destination id field is required."],
        "type": ["The type field is required."],
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"time_to_run_at": "25:00"}, "time_to_run_at"),
        (
            {"time_to_run_at": None, "custom_cron_expression": "not a cron"},
            "custom_cron_expression",
        ),
        ({"time_to_run_at": None}, "time_to_run_at"),
        ({"frequency": "hourly"}, "frequency"),
        ({"frequency": None}, "frequency"),
        ({"maximum_backups_to_keep": -1}, "maximum_backups_to_keep"),
        ({"source_path": "relative/path"}, "source_path"),
        ({"source_path": None}, "source_path"),
        ({"type": "database"}, "database_name"),
        ({"label": "x" * 256}, "label"),
        ({"appended_file_name": "../etc"}, "appended_file_name"),
        ({"isolated_username": "backup"}, "isolated_password"),
        ({"notification_stream_ids": ["a"]}, "notification_stream_ids.0"),
    ],
)
async def test_an_invalid_field_is_a_422_naming_it(
    rig: ApiRig, change: dict[str, object], field: str
) -> None:
    before = rig.commits()
    response = await rig.post("/api/backup-tasks", {**NEW_TASK, **change})
    assert response.status_code == 422
    assert list(response.json()["errors"]) == [field]
    assert rig.commits() == before


async def test_both_a_time_and_a_cron_is_a_422(rig: ApiRig) -> None:
    response = await rig.post(
        "/api/backup-tasks", {**NEW_TASK, "custom_cron_expression": "0 1 * * *"}
    )
    assert response.status_code == 422
    assert response.json()["errors"] == {
        "time_to_run_at": ["Give either time_to_run_at or custom_cron_expression, not both."]
    }


async def test_a_422_never_echoes_a_secret(rig: ApiRig) -> None:
    response = await rig.post(
        "/api/backup-tasks",
        {**NEW_TASK, "encryption_password": "p" * 2000, "time_to_run_at": "99:99"},
    )
    assert response.status_code == 422
    assert "ppp" not in response.text


async def test_an_unknown_route_uses_the_error_shape(rig: ApiRig) -> None:
    response = await rig.get("/api/nothing-here")
    assert response.status_code == 404
    assert set(response.json()) == {"error", "message"}


async def test_a_wrong_method_uses_the_error_shape(rig: ApiRig) -> None:
    response = await rig.client.patch("/api/backup-tasks", headers=rig.auth(1))
    assert response.status_code == 405
    assert response.json()["error"] == "Method Not Allowed"


async def test_every_route_declares_its_responses_with_models(rig: ApiRig) -> None:
    schema = (await rig.client.get("/openapi.json")).json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                content = response.get("content", {}).get("application/json", {})
                assert "$ref" in content.get("schema", {}), (method, path, status)
            assert "500" not in operation["responses"]
            assert "401" in operation["responses"], (method, path)
