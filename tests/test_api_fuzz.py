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
        max_examples=120,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def call(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    call()
