"""Two `reconciler serve` processes as nodes of one cluster: one bare git remote, one PostgreSQL
state store. Any node answers the API with the same tokens and history; a write on one reaches
the other through the remote."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from reconciler.state import open_state
from reconciler.types import RunStatus
from tests.daemonproc import RunningDaemon, create_token, serving
from tests.servers import PostgresServer
from tests.stores import fresh_postgres_database
from tests.test_daemon_remote import team_repository
from tests.test_fault_kill_during_writes import NEW_TASK
from tests.test_state import T0

pytestmark = pytest.mark.servers


@pytest.fixture
def url(postgres: PostgresServer) -> Iterator[str]:
    with fresh_postgres_database(postgres) as made:
        yield made


def two_nodes(stack: ExitStack, tmp_path: Path, url: str) -> tuple[RunningDaemon, RunningDaemon]:
    _, remote = team_repository(tmp_path)
    token = create_token(url)
    options = ["--remote", remote, "--fetch-interval", "3600"]
    return tuple(  # type: ignore[return-value]
        stack.enter_context(
            serving(
                tmp_path / f"{name}-clone", url, token, tmp_path / f"{name}.log", options=options
            )
        )
        for name in ("a", "b")
    )


def test_an_api_write_on_one_node_shows_on_another_after_sync(tmp_path: Path, url: str) -> None:
    with ExitStack() as stack:
        a, b = two_nodes(stack, tmp_path, url)

        status, created = a.send("POST", "/api/backup-tasks", {**NEW_TASK, "label": "made on a"})
        assert status == 201, created
        task_id = created["data"]["id"]
        status, synced = b.send("POST", "/api/sync", {})

        assert status == 200
        assert synced["data"]["revision"] == a.get("/api/sync")["data"]["revision"]
        assert b.get(f"/api/backup-tasks/{task_id}")["data"]["id"] == task_id


def test_every_node_answers_from_the_shared_history(tmp_path: Path, url: str) -> None:
    store = open_state(url)
    try:
        run = store.runs.start_run(1, "manual", T0)
        store.runs.append_logs(run, [(T0, "written by another node")])
        store.runs.finish_run(run, RunStatus.SUCCESSFUL, T0)
    finally:
        store.close()
    with ExitStack() as stack:
        a, b = two_nodes(stack, tmp_path, url)

        logs = [node.get("/api/backup-tasks/1/latest-log")["data"] for node in (a, b)]

    assert logs[0] == logs[1]
    assert "written by another node" in str(logs[0])
