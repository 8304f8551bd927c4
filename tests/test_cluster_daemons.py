"""Three `reconciler serve` processes on one bare git remote and one PostgreSQL store, backing up
over the real sshd: each fire time runs once, a node killed with SIGKILL mid-run has its slot
run once elsewhere after its lease, and a node cut off from the remote claims nothing."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from reconciler.state import StateStore, open_state
from reconciler.state.runs import RunRecord
from reconciler.types import RunStatus
from tests import configset
from tests.daemonproc import RunningDaemon, create_token, serving
from tests.gitrepo import person_pushes, shared_with_a_remote
from tests.runs import server_file
from tests.servers import PostgresServer, SshServer
from tests.stores import fresh_postgres_database

pytestmark = pytest.mark.servers
LEASE_SECONDS = 3


@pytest.fixture
def url(postgres: PostgresServer) -> Iterator[str]:
    with fresh_postgres_database(postgres) as made:
        yield made


def config(tmp_path: Path, sshd: SshServer, **task: Any) -> dict[str, str]:
    source = tmp_path / "source"
    source.mkdir(exist_ok=True)
    (source / "a.txt").write_text("bytes to store\n" * 100)
    fields = {"source": {"type": "files", "path": str(source)}, **task}
    return {
        **configset.base_files(),
        "servers/one.yaml": server_file(sshd),
        "destinations/one.yaml": configset.destination(1, 1, path=str(tmp_path / "backups")),
        "tasks/1.yaml": configset.task(1, 1, **fields),
    }


def start_nodes(
    stack: ExitStack, tmp_path: Path, url: str, remotes: dict[str, str]
) -> dict[str, RunningDaemon]:
    token = create_token(url)
    nodes = {}
    for name, remote in remotes.items():
        options = ["--remote", remote, "--fetch-interval", "3600", "--node-id", name]
        options += ["--lease", str(LEASE_SECONDS)]
        log = tmp_path / f"{name}.log"
        nodes[name] = stack.enter_context(
            serving(tmp_path / f"{name}-clone", url, token, log, options=options)
        )
    return nodes


def runs_of(url: str, task_id: int) -> list[RunRecord]:
    store: StateStore = open_state(url)
    try:
        return sorted(store.runs.page(task_id, 0, 100)[0], key=lambda run: run.id)
    finally:
        store.close()


def wait_for(condition: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(0.2)


def test_an_every_minute_task_on_three_nodes_runs_once_a_minute(
    tmp_path: Path, url: str, sshd: SshServer, postgres: PostgresServer
) -> None:
    files = config(tmp_path, sshd, schedule={"custom_cron": "* * * * *", "timezone": "UTC"})
    remote = shared_with_a_remote(tmp_path / "person", files, tmp_path / "upstream.git")
    with ExitStack() as stack:
        start_nodes(stack, tmp_path, url, {"a": remote, "b": remote, "c": remote})
        started = datetime.now(UTC)
        first = started.replace(second=0, microsecond=0) + timedelta(minutes=1)
        slots = [first + timedelta(minutes=n) for n in range(3)]
        time.sleep(max(0.0, (slots[-1] - datetime.now(UTC)).total_seconds()) + 15)

    runs = [run for run in runs_of(url, 1) if run.started_at >= first]
    assert len(runs) == 3, [(run.started_at, run.status) for run in runs]
    assert all(run.status is RunStatus.SUCCESSFUL for run in runs), runs[0].output
    database = url.rsplit("/", 1)[1]
    claimed = postgres.sql(
        "SELECT slot, count(*), min(node_id) FROM claims GROUP BY slot ORDER BY slot", database
    ).splitlines()
    assert len(claimed) == 3
    assert all(line.split("|")[1] == "1" for line in claimed), claimed


def test_a_node_killed_mid_run_has_its_slot_run_once_elsewhere(
    tmp_path: Path, url: str, sshd: SshServer, postgres: PostgresServer
) -> None:
    files = config(tmp_path, sshd, hooks={"before": ["sleep 8"]})
    remote = shared_with_a_remote(tmp_path / "person", files, tmp_path / "upstream.git")
    with ExitStack() as stack:
        nodes = start_nodes(stack, tmp_path, url, {"a": remote, "b": remote, "c": remote})
        status, _ = nodes["a"].send("POST", "/api/backup-tasks/1/run", {})
        assert status == 202
        wait_for(lambda: len(runs_of(url, 1)) == 1, 10, "node a's run started")
        os.kill(nodes["a"].process.pid, signal.SIGKILL)
        nodes["a"].process.wait()
        wait_for(
            lambda: sum(run.finished_at is not None for run in runs_of(url, 1)) == 2,
            60,
            "the slot ran again elsewhere",
        )
        time.sleep(2 * LEASE_SECONDS)  # room for a second take-over, which must not come

    killed, again = runs_of(url, 1)
    assert killed.status is RunStatus.FAILED
    assert killed.reason == "interrupted: node a stopped renewing its claim (its lease expired)"
    assert again.status is RunStatus.SUCCESSFUL, again.output
    database = url.rsplit("/", 1)[1]
    attempts = postgres.sql("SELECT attempt, node_id FROM claims ORDER BY attempt", database)
    assert attempts.splitlines()[0] == "0|a"
    assert attempts.splitlines()[1].split("|")[0] == "1"
    assert len(attempts.splitlines()) == 2


def test_a_node_cut_off_from_the_remote_claims_nothing(
    tmp_path: Path, url: str, sshd: SshServer
) -> None:
    files = config(tmp_path, sshd)
    person = tmp_path / "person"
    remote = shared_with_a_remote(person, files, tmp_path / "upstream.git")
    link = tmp_path / "cut-off.git"
    link.symlink_to(tmp_path / "upstream.git")
    with ExitStack() as stack:
        nodes = start_nodes(stack, tmp_path, url, {"a": remote, "b": remote, "c": f"file://{link}"})
        link.unlink()  # from now on node c's fetches fail
        newer = person_pushes(person, {"tasks/1.yaml": configset.task(1, 1, **_renamed(files))})
        for name in ("a", "b", "c"):
            nodes[name].send("POST", "/api/sync", {})
        nodes["a"].wait_for_revision(newer, within=10)
        time.sleep(LEASE_SECONDS)  # every node's heartbeat has its revision by now

        refused, said = nodes["c"].send("POST", "/api/backup-tasks/1/run", {})
        accepted, _ = nodes["b"].send("POST", "/api/backup-tasks/1/run", {})

    assert refused == 409
    assert "older than another node's" in said["message"]
    assert accepted == 202


def _renamed(files: dict[str, str]) -> dict[str, Any]:
    """Task 1's fields with another label: a newer commit of the same task."""
    fields: dict[str, Any] = yaml.safe_load(files["tasks/1.yaml"])
    fields.pop("id")
    fields.pop("user_id")
    return {**fields, "label": "renamed on the remote"}


def test_a_node_warns_that_a_local_destination_is_one_nodes_disk(
    tmp_path: Path, url: str, sshd: SshServer
) -> None:
    remote = shared_with_a_remote(tmp_path / "person", config(tmp_path, sshd), tmp_path / "up.git")
    with ExitStack() as stack:
        start_nodes(stack, tmp_path, url, {"a": remote})

    assert "destination 1 (destination 1) is type local: in a cluster" in (
        (tmp_path / "a.log").read_text()
    )


def test_the_metrics_name_the_node(tmp_path: Path, url: str, sshd: SshServer) -> None:
    remote = shared_with_a_remote(tmp_path / "person", config(tmp_path, sshd), tmp_path / "up.git")
    with ExitStack() as stack:
        node = start_nodes(stack, tmp_path, url, {"backup2": remote})["backup2"]
        metrics = httpx.get(node.url + "/metrics", timeout=10).text

    assert 'reconciler_node_info{node_id="backup2"} 1.0' in metrics
    assert "reconciler_node_claims_held 0.0" in metrics
    assert "reconciler_node_waiting_for_server 0.0" in metrics


def test_sync_lists_every_node_with_its_revision(tmp_path: Path, url: str, sshd: SshServer) -> None:
    remote = shared_with_a_remote(tmp_path / "person", config(tmp_path, sshd), tmp_path / "up.git")
    with ExitStack() as stack:
        nodes = start_nodes(stack, tmp_path, url, {"a": remote, "b": remote})
        revision = nodes["a"].get("/api/sync")["data"]["revision"]
        time.sleep(LEASE_SECONDS / 3 + 1.5)  # a heartbeat of each
        listed = nodes["b"].get("/api/sync")["data"]["nodes"]

    assert [node["id"] for node in listed] == ["a", "b"]
    assert all(node["revision"] == revision for node in listed)
    assert all(node["revision_time"] and node["last_seen"] for node in listed)
