"""No input makes the API fail: schemathesis generates requests from /openapi.json, valid and not,
and every response must be a declared status with a body matching its declared schema."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from tests.apirig import ApiRig, build, close

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture
def fuzzed(tmp_path: Path) -> Iterator[ApiRig]:
    rig = build(tmp_path)
    asyncio.run(rig.engine.sync())
    yield rig
    asyncio.run(close(rig))


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda mode: mode.value)
def test_no_request_gets_a_server_error_or_an_undeclared_response(
    fuzzed: ApiRig, mode: GenerationMode
) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed.app)
    headers = fuzzed.auth(1)

    # Random ids mostly miss; aim a share of the requests at the caller's real tasks.
    strategy = st.one_of(
        schema.as_strategy(mode),
        *(schema.as_strategy(mode, path_parameters={"task_id": str(i)}) for i in (1, 7)),
    )

    @given(case=strategy)
    @settings(
        max_examples=250,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def call(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    call()


_ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 10**6),
    st.text(max_size=20),
    st.lists(st.integers(-1, 9), max_size=3),
)
_PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "remote_server_id": st.integers(1, 3),
    "backup_destination_id": st.integers(1, 3),
    "label": st.text(min_size=1, max_size=300),
    "description": st.text(max_size=50),
    "source_path": st.sampled_from(["/srv", "/home/a b", "relative", "/x\ny"]),
    "type": st.sampled_from(["files", "database"]),
    "database_name": st.sampled_from(["shop", "", "x" * 70]),
    "excluded_database_tables": st.sampled_from(["a,b", " , ", "logs"]),
    "frequency": st.sampled_from(["daily", "weekly", "hourly"]),
    "time_to_run_at": st.from_regex(r"\A[0-2]?[0-9]:[0-6][0-9]\Z"),
    "custom_cron_expression": st.sampled_from(["0 1 * * *", "*/5 * * * *", "61 * * * *", ""]),
    "maximum_backups_to_keep": st.integers(-1, 20),
    "appended_file_name": st.sampled_from(["nightly", ".hidden", "a/b", ""]),
    "store_path": st.sampled_from(["/a/b", "../up", "", "x//y/"]),
    "encryption_password": st.text(max_size=10),
    "isolated_username": st.sampled_from(["backup", "-rf", ""]),
    "isolated_password": st.text(max_size=10),
    "notification_stream_ids": st.lists(st.integers(0, 3), max_size=3),
}
# A few fields at a time, mostly plausible values, so that many updates succeed.
_BODIES = st.lists(st.sampled_from(sorted(_PLAUSIBLE)), max_size=4, unique=True).flatmap(
    lambda names: st.fixed_dictionaries(
        {name: st.one_of(_PLAUSIBLE[name], _PLAUSIBLE[name], _ANYTHING) for name in names}
    )
)


def test_any_update_is_applied_whole_or_refused_with_a_422(fuzzed: ApiRig) -> None:
    """Random partial updates: each answers 200 (one commit, the engine shows it) or 422
    (nothing written); the work tree stays clean either way."""

    @given(body=_BODIES, task_id=st.sampled_from([1, 7]))
    @settings(max_examples=150, deadline=None, database=None)
    def update(body: dict[str, Any], task_id: int) -> None:
        before = len(fuzzed.commits())
        response = asyncio.run(fuzzed.put(f"/api/backup-tasks/{task_id}", body))
        assert response.status_code in (200, 422), response.text
        if response.status_code == 422:
            assert len(fuzzed.commits()) == before
        else:
            assert len(fuzzed.commits()) - before in (0, 1)
            shown = asyncio.run(fuzzed.get(f"/api/backup-tasks/{task_id}")).json()["data"]
            assert shown == response.json()["data"]
        assert fuzzed.work_tree_status() == ""

    update()
