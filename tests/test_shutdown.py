"""SIGTERM to `reconciler serve` while a real backup streams over SSH: scheduling and admission
stop at once (the API answers 503 to run requests), the running backup gets the shutdown grace
to finish, and what is still going after it (or after a second signal) ends interrupted with its
partial file removed; the process exits 0 either way.

The remote is a real OpenSSH login whose forced command holds each backup at its start while a
gate file exists (tests.recording), so a run stays running, its partial file open, as long as
the test wants.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from reconciler.backup import INTERRUPTED_BY_STOP
from reconciler.state import open_state
from reconciler.state.runs import RunRecord
from reconciler.types import RunStatus
from tests import configset
from tests.daemonproc import RunningDaemon, create_token, serving
from tests.gitrepo import init_repo
from tests.recording import RecordingRemote, recording_remote
from tests.runs import server_file
from tests.servers import SshServer, wait_until

# Generous: the machine is shared, and nothing here should take more than a few seconds.
EXIT_WITHIN = 60


@pytest.fixture
def remote(sshd: SshServer) -> Iterator[RecordingRemote]:
    with recording_remote(sshd) as made:
        yield made


@dataclass
class Setup:
    repo: Path
    state: Path
    token: str
    log: Path
    destination: Path
    remote: RecordingRemote

    def latest_run(self, task_id: int) -> RunRecord | None:
        store = open_state(self.state)
        try:
            return store.runs.latest_run(task_id)
        finally:
            store.close()

    def partials(self) -> list[Path]:
        return sorted(self.destination.glob(".*.partial"))


@pytest.fixture
def setup(remote: RecordingRemote, tmp_path: Path) -> Setup:
    """Two tasks of one server, backing up the remote's small folder into one local folder."""
    destination = tmp_path / "backups"
    destination.mkdir()
    files = {
        **configset.base_files(),
        "servers/one.yaml": server_file(remote.server),
        "destinations/one.yaml": configset.destination(1, 1, path=str(destination)),
    }
    for task_id in (1, 2):
        files[f"tasks/{task_id}.yaml"] = configset.task(
            task_id, source={"type": "files", "path": str(remote.source)}
        )
    repo = tmp_path / "config"
    init_repo(repo, files)
    state = tmp_path / "state" / "state.db"
    return Setup(repo, state, create_token(state), tmp_path / "daemon.log", destination, remote)


@contextmanager
def held_run(setup: Setup, grace: str) -> Iterator[RunningDaemon]:
    """The daemon, with task 1's backup running and held at its start on the remote."""
    setup.remote.close_gate()
    try:
        with serving(
            setup.repo, setup.state, setup.token, setup.log, options=["--shutdown-grace", grace]
        ) as daemon:
            started = _post_run(daemon, 1)
            assert started.status_code == 202, started.text
            setup.remote.wait_until_started(1)
            wait_until(lambda: bool(setup.partials()), "the run's partial file", setup.log)
            yield daemon
    finally:
        setup.remote.open_gate()


def _post_run(daemon: RunningDaemon, task_id: int) -> httpx.Response:
    return httpx.post(
        f"{daemon.url}/api/backup-tasks/{task_id}/run",
        headers={"Authorization": f"Bearer {daemon.token}"},
        timeout=10,
    )


def _wait_for_log(setup: Setup, text: str) -> None:
    wait_until(lambda: text in setup.log.read_text(errors="replace"), repr(text), setup.log)


def _exit_code(daemon: RunningDaemon) -> int:
    try:
        return daemon.process.wait(timeout=EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        log = daemon.log.read_text(errors="replace")[-4000:]
        raise AssertionError(f"the daemon did not exit within {EXIT_WITHIN} s:\n{log}") from None


def test_a_run_going_at_sigterm_finishes_within_the_grace_and_the_daemon_exits_0(
    setup: Setup,
) -> None:
    with held_run(setup, grace="600") as daemon:
        daemon.process.send_signal(signal.SIGTERM)
        _wait_for_log(setup, "stopping: 1 run(s) still going, waiting up to 600s")
        assert daemon.process.poll() is None  # waiting for the run
        setup.remote.open_gate()
        assert _exit_code(daemon) == 0

    run = setup.latest_run(1)
    assert run is not None
    assert run.status is RunStatus.SUCCESSFUL, run.reason
    assert [path.name for path in setup.destination.iterdir()] == [run.backup_name]
    assert "reconciler.daemon: stopped\n" in setup.log.read_text()


def test_a_run_request_during_the_grace_is_answered_503_and_starts_nothing(
    setup: Setup,
) -> None:
    with held_run(setup, grace="600") as daemon:
        daemon.process.send_signal(signal.SIGTERM)
        _wait_for_log(setup, "stopping: 1 run(s) still going")
        refused = _post_run(daemon, 2)
        setup.remote.open_gate()
        assert _exit_code(daemon) == 0

    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "60"
    assert "shutting down" in refused.json()["message"]
    assert setup.latest_run(2) is None
    assert setup.remote.started() == 1


def test_a_run_still_going_when_the_grace_ends_is_interrupted_and_its_partial_removed(
    setup: Setup,
) -> None:
    with held_run(setup, grace="1") as daemon:
        daemon.process.send_signal(signal.SIGTERM)
        assert _exit_code(daemon) == 0

    run = setup.latest_run(1)
    assert run is not None
    assert run.status is RunStatus.FAILED
    assert run.reason == INTERRUPTED_BY_STOP
    assert list(setup.destination.iterdir()) == []
    assert "stopping: interrupting 1 run(s) still going" in setup.log.read_text()
    assert setup.remote.started() == 1


def test_a_second_sigterm_during_the_grace_interrupts_the_run_at_once(setup: Setup) -> None:
    with held_run(setup, grace="600") as daemon:
        daemon.process.send_signal(signal.SIGTERM)
        _wait_for_log(setup, "waiting up to 600s")
        daemon.process.send_signal(signal.SIGTERM)
        assert _exit_code(daemon) == 0  # within EXIT_WITHIN, far below the 600 s grace

    run = setup.latest_run(1)
    assert run is not None
    assert run.reason == INTERRUPTED_BY_STOP
    assert setup.partials() == []


def test_the_systemd_units_stop_timeout_outlasts_its_shutdown_grace() -> None:
    unit = (Path(__file__).resolve().parent.parent / "deploy" / "reconciler.service").read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and line[0] != "#"
    )
    grace = re.search(r"--shutdown-grace (\d+)", settings["ExecStart"])
    assert grace is not None
    assert int(settings["TimeoutStopSec"]) > int(grace.group(1))
    assert settings["KillMode"] == "mixed"  # the backup's gpg and zstd are not signalled


def test_the_up_interval_ends_when_scheduling_stopped_so_slots_of_the_grace_are_caught_up(
    setup: Setup,
) -> None:
    with held_run(setup, grace="600") as daemon:
        daemon.process.send_signal(signal.SIGTERM)
        _wait_for_log(setup, "waiting up to 600s")
        seen_waiting = datetime.now(UTC)  # scheduling had stopped before that line was logged
        setup.remote.open_gate()
        assert _exit_code(daemon) == 0

    store = open_state(setup.state)
    try:
        ((since, until),) = store.schedule.alive_since(seen_waiting - timedelta(hours=1))
    finally:
        store.close()
    assert since <= until <= seen_waiting
