"""The daemon as a user runs it: `reconciler serve` in its own process, driven by git and HTTP."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import configset
from tests.daemonproc import start_daemon
from tests.gitrepo import commit_files, git, head, init_repo


@dataclass
class RunningDaemon:
    repo: Path
    url: str
    token: str
    process: subprocess.Popen[bytes]
    log: Path

    def get(self, path: str) -> Any:
        response = httpx.get(self.url + path, headers=self._auth, timeout=5)
        response.raise_for_status()
        return response.json()

    def send(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        response = httpx.request(method, self.url + path, json=body, headers=self._auth, timeout=10)
        return response.status_code, response.json()

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def wait_for_revision(self, revision: str, within: float) -> float:
        """Seconds until the daemon reports `revision` as applied; fails after `within`."""
        started = time.monotonic()
        while time.monotonic() - started < within:
            if self.get("/api/sync")["data"]["revision"] == revision:
                return time.monotonic() - started
            time.sleep(0.01)
        raise AssertionError(f"revision {revision} not applied within {within} s")


def reconciler(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@contextmanager
def running_daemon(tmp_path: Path, files: Mapping[str, str]) -> Iterator[RunningDaemon]:
    """`reconciler serve` on a new repository of `files`, with a token for user 1.

    The state store is `tmp_path/state/state.db`; anything already there is kept.
    """
    repo = tmp_path / "config"
    init_repo(repo, files)
    state = tmp_path / "state" / "state.db"
    created = reconciler("token", "create", "--state", str(state), "--user-id", "1", "--name", "t")
    assert created.returncode == 0, created.stderr
    process = start_daemon(repo, state, tmp_path / "daemon.log")
    try:
        yield RunningDaemon(repo, process.url, created.stdout.strip(), process.process, process.log)
    finally:
        process.stop()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[RunningDaemon]:
    files = {**configset.base_files(), "tasks/1-home.yaml": configset.task(1)}
    with running_daemon(tmp_path, files) as running:
        yield running


def test_the_daemon_serves_the_head_commit(daemon: RunningDaemon) -> None:
    sync = daemon.get("/api/sync")["data"]
    assert sync["revision"] == head(daemon.repo)
    assert sync["tasks"] == 1
    assert sync["errors"] == []


def test_a_commit_reaches_the_running_daemon_well_under_a_second(daemon: RunningDaemon) -> None:
    revision = commit_files(daemon.repo, {"tasks/1-home.yaml": configset.task(1, label="x")}, "e")
    assert daemon.wait_for_revision(revision, within=5) < 1.0
    assert daemon.get("/api/backup-tasks/1")["data"]["label"] == "x"


def test_a_broken_commit_is_reported_with_file_line_and_field(daemon: RunningDaemon) -> None:
    broken = configset.task(1).replace("time: 02:30", "time: '25:00'")
    revision = commit_files(daemon.repo, {"tasks/1-home.yaml": broken}, "typo")
    daemon.wait_for_revision(revision, within=5)
    sync = daemon.get("/api/sync")["data"]
    assert sync["errors"] == [
        {
            "path": "tasks/1-home.yaml",
            "line": 11,
            "field": "schedule.time",
            "message": "time must be HH:MM on a 24 hour clock (00:00 to 23:59), got '25:00'",
        }
    ]
    assert daemon.get("/api/backup-tasks/1")["data"]["schedule"]["scheduled_utc_time"] == "02:30"


def test_an_api_update_is_a_commit_by_the_tokens_user(daemon: RunningDaemon) -> None:
    status, body = daemon.send("PUT", "/api/backup-tasks/1", {"label": "From the API"})
    assert status == 200
    assert body["data"]["label"] == "From the API"
    author = git(daemon.repo, "log", "-1", "--format=%an <%ae>|%s").strip()
    assert author.startswith("Ada <ada@example.com>|api: update backup task 1")
    assert daemon.get("/api/sync")["data"]["revision"] == head(daemon.repo)
    assert git(daemon.repo, "status", "--porcelain") == ""


def test_the_daemon_stops_cleanly_on_sigterm(daemon: RunningDaemon) -> None:
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=15) == 0
    assert "Traceback" not in daemon.log.read_text()
