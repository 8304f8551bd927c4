"""kill -9 during a backup run, then a restart: the run ends failed and says why, and the
temporary file it was writing is removed from where it was written, whatever the config says now."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.state.sqlite import SqliteStateStore
from reconciler.types import RunStatus
from tests import configset
from tests.daemonproc import create_token, serving
from tests.gitrepo import commit_files, init_repo
from tests.runs import postgres_database, server_file
from tests.servers import BlockedDump, PostgresServer, SshServer

pytestmark = pytest.mark.servers


def config_files(sshd: SshServer, postgres: PostgresServer, backups: Path) -> dict[str, str]:
    database = postgres_database(postgres)
    server = server_file(sshd, database=database)
    task = configset.task(
        1, source={"type": "database", "database_name": "slow"}, storage={"path": "nightly"}
    )
    return {
        **configset.base_files(),
        "servers/one.yaml": server,
        "destinations/one.yaml": configset.destination(1, 1, path=str(backups)),
        "tasks/1-slow.yaml": task,
    }


def partials(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.rglob("*.partial"))


def wait_for(condition: Callable[[], bool], what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} within {within} s")


EDITS: dict[str, dict[str, str | None]] = {
    "the task deleted": {"tasks/1-slow.yaml": None},
    "its storage path changed": {
        "tasks/1-slow.yaml": configset.task(
            1, source={"type": "database", "database_name": "slow"}, storage={"path": "moved"}
        )
    },
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_a_run_killed_mid_stream_has_its_partial_removed_at_the_next_start(
    edit: str,
    tmp_path: Path,
    sshd: SshServer,
    postgres: PostgresServer,
    blocked: BlockedDump,
) -> None:
    repo, state, backups = tmp_path / "config", tmp_path / "state" / "state.db", tmp_path / "b"
    init_repo(repo, config_files(sshd, postgres, backups))
    env = {**os.environ, "PG_PASSWORD": postgres.password}
    token = create_token(state)
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reconciler",
            "run",
            "1",
            "--repo",
            str(repo),
            "--state",
            str(state),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_for(lambda: partials(backups) != [], "the run started writing its backup")
    finally:
        run.send_signal(signal.SIGKILL)
        run.wait(timeout=10)
    written = partials(backups)
    commit_files(repo, EDITS[edit], edit)

    with serving(repo, state, token, tmp_path / "daemon.log", env=env):
        wait_for(lambda: partials(backups) == [], "the partial backup was removed")
    (partial,) = written
    name = partial.removeprefix(".").removesuffix(".partial")
    assert f"removed the partial backup nightly/{name}" in (tmp_path / "daemon.log").read_text()
    history = SqliteStateStore(state)
    try:
        record = history.runs.latest_run(1)
    finally:
        history.close()
    assert record is not None
    assert record.status is RunStatus.FAILED
    assert record.reason == "interrupted by a daemon restart"
    assert [line.split(" ", 1)[1] for line in record.output.splitlines()[-2:]] == [
        "interrupted by a daemon restart",
        f"removed the partial backup of nightly/{name}",
    ]
    assert list(backups.rglob("*")) == [backups / "nightly"]  # nothing under a final name
