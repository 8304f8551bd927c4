"""The daemon as a user runs it: `reconciler serve` in its own process, driven by git and HTTP."""

from __future__ import annotations

import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from reconciler.state.sqlite import SqliteStateStore
from tests import configset
from tests.daemonproc import RunningDaemon, create_token, serving
from tests.gitrepo import commit_files, git, head, init_repo


@contextmanager
def running_daemon(tmp_path: Path, files: Mapping[str, str]) -> Iterator[RunningDaemon]:
    """`reconciler serve` on a new repository of `files`, with a token for user 1.

    The state store is `tmp_path/state/state.db`; anything already there is kept.
    """
    repo = tmp_path / "config"
    init_repo(repo, files)
    state = tmp_path / "state" / "state.db"
    with serving(repo, state, create_token(state), tmp_path / "daemon.log") as running:
        yield running


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


def test_a_commit_reaches_the_running_daemon_through_its_ref_watch(daemon: RunningDaemon) -> None:
    """Long before the periodic resync (every 60 s) could: bench/bench_core.py measures how
    long after the commit."""
    revision = commit_files(daemon.repo, {"tasks/1-home.yaml": configset.task(1, label="x")}, "e")
    daemon.wait_for_revision(revision, within=10)
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


def test_a_state_store_deleted_while_stopped_is_created_new_and_its_tokens_are_gone(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "config"
    init_repo(repo, {**configset.base_files(), "tasks/1-home.yaml": configset.task(1)})
    state, log = tmp_path / "state" / "state.db", tmp_path / "daemon.log"
    token = create_token(state)
    with serving(repo, state, token, log) as first:
        assert first.get("/api/backup-tasks/1")["data"]["id"] == 1
    for leftover in state.parent.glob("state.db*"):
        leftover.unlink()

    with serving(repo, state, token, log) as second:  # serving: /healthz answers 200
        with pytest.raises(httpx.HTTPStatusError) as refused:
            second.get("/api/backup-tasks/1")
        assert refused.value.response.status_code == 401
    output = log.read_text()
    assert output.count("was created new") == 1
    assert "no API tokens" in output.split("was created new")[1].splitlines()[0]
    assert "Traceback" not in output


def test_the_daemon_records_when_it_was_alive(daemon: RunningDaemon, tmp_path: Path) -> None:
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=15) == 0
    history = SqliteStateStore(tmp_path / "state" / "state.db")
    try:
        intervals = history.schedule.alive_since(datetime.now(UTC) - timedelta(minutes=5))
    finally:
        history.close()
    assert len(intervals) == 1
    since, until = intervals[0]
    assert since <= until <= datetime.now(UTC)
