"""`verify: {load_into: SERVER_ID}` as the config states it: a dump task's own user's server
entry with a database engine, the task's engine when it declares one; anything else is an error
on the task's `verify.load_into` line."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.desired import DesiredState, build_desired
from reconciler.documents import parse_file
from tests import configset

DUMP = {"type": "database", "database_name": "shop"}
DRILL = {"schedule": {"frequency": "weekly", "time": "06:00"}}


def build(task_fields: dict[str, Any], **servers: str) -> DesiredState:
    files = {
        **configset.base_files(),
        "servers/scratch.yaml": configset.server(3, 1, database={"engine": "postgresql"}),
        **{f"servers/{name}.yaml": text for name, text in servers.items()},
        "tasks/1.yaml": configset.task(1, **task_fields),
    }
    parsed = {path: parse_file(path, text.encode()) for path, text in files.items()}
    return build_desired(parsed, DesiredState())


def test_a_dump_task_loading_into_its_users_server_resolves_with_that_server() -> None:
    state = build({"source": DUMP, "verify": DRILL | {"load_into": 3}})

    assert state.errors == ()
    scratch = state.tasks[1].scratch_server
    assert scratch is not None
    assert scratch.id == 3


@pytest.mark.parametrize(
    ("fields", "servers", "said"),
    [
        (
            {"verify": DRILL | {"load_into": 3}},
            {},
            "load_into loads a database dump; this task backs up files",
        ),
        (
            {"source": DUMP, "verify": DRILL | {"load_into": 9}},
            {},
            "remote server 9 is not defined",
        ),
        (
            {"source": DUMP, "verify": DRILL | {"load_into": 2}},
            {},
            "remote server 2 belongs to another user",
        ),
        (
            {"source": DUMP, "verify": DRILL | {"load_into": 4}},
            {"bare": configset.server(4, 1)},
            "remote server 4 has no database.engine",
        ),
        (
            {"source": DUMP, "verify": DRILL | {"load_into": 3}},
            {"one": configset.server(1, 1, database={"engine": "mysql"})},
            "remote server 3 runs postgresql, but the task dumps mysql",
        ),
    ],
)
def test_a_load_into_that_cannot_work_is_an_error_on_its_line(
    fields: dict[str, Any], servers: dict[str, str], said: str
) -> None:
    state = build(fields, **servers)

    assert 1 not in state.tasks
    (error,) = state.errors
    assert (error.path, error.field) == ("tasks/1.yaml", "verify.load_into")
    assert error.line is not None
    assert said in error.message
