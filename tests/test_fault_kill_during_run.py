"""kill -9 of the daemon while a backup streams over SSH: after a restart the run is reported
interrupted, its partial file is gone, nothing sits under a final name, older backups are intact."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx

from tests import configset
from tests.daemonproc import create_token, serving
from tests.gitrepo import init_repo
from tests.runs import server_file
from tests.servers import SshServer

OLDER = "backup_1_20250101000000.tar"


def _wait_for_partial(destination: Path, at_least: int) -> Path:
    for _ in range(600):
        partials = [path for path in destination.glob(".*.partial") if path.stat().st_size]
        if partials and partials[0].stat().st_size >= at_least:
            return partials[0]
        time.sleep(0.05)
    raise AssertionError(f"no partial backup grew to {at_least} bytes in {destination}")


def test_a_run_killed_mid_stream_is_interrupted_and_leaves_nothing_partial(
    tmp_path: Path, sshd: SshServer
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    with (source / "big.bin").open("wb") as big:
        big.truncate(4 * 1024**3)  # sparse: cheap to make, seconds to stream
    destination = tmp_path / "backups"
    destination.mkdir()
    (destination / OLDER).write_bytes(b"an older backup\n")
    repo = tmp_path / "config"
    server = server_file(sshd)
    task = configset.task(
        1, source={"type": "files", "path": str(source)}, storage={"compression": "none"}
    )
    init_repo(
        repo,
        {
            **configset.base_files(),
            "servers/one.yaml": server,
            "destinations/one.yaml": configset.destination(1, 1, path=str(destination)),
            "tasks/1-big.yaml": task,
        },
    )
    state = tmp_path / "state" / "state.db"
    token = create_token(state)
    headers = {"Authorization": f"Bearer {token}"}
    log = tmp_path / "daemon.log"

    with serving(repo, state, token, log) as daemon:
        started = httpx.post(f"{daemon.url}/api/backup-tasks/1/run", headers=headers)
        assert started.status_code == 202, started.text
        _wait_for_partial(destination, at_least=16 * 1024**2)
        daemon.process.kill()
        daemon.process.wait()

    with serving(repo, state, token, log) as daemon:
        latest = httpx.get(f"{daemon.url}/api/backup-tasks/1/latest-log", headers=headers)
        status = httpx.get(f"{daemon.url}/api/backup-tasks/1/status", headers=headers)
        assert httpx.get(f"{daemon.url}/healthz").status_code == 200

    assert sorted(os.listdir(destination)) == [OLDER]
    assert (destination / OLDER).read_bytes() == b"an older backup\n"
    assert status.json()["data"]["status"] == "ready"
    run = latest.json()["data"]
    assert run["status"] == "failed"
    assert "interrupted by a daemon restart" in run["output"]
