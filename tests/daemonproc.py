"""`reconciler serve` in its own process, as a user runs it: start it, then stop or kill it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.servers import free_port, wait_until


@dataclass
class DaemonProcess:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """SIGTERM, as systemd stops it; SIGKILL if it does not end within 15 s."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        self.process.kill()
        self.process.wait()


def start_daemon(repo: Path, state: Path, log: Path) -> DaemonProcess:
    """Serve `repo` with the state store `state` on a free port; returns once /healthz is 200."""
    port = free_port()
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "serve", "--repo", str(repo), "--state",
             str(state), "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    daemon = DaemonProcess(f"http://127.0.0.1:{port}", process, log)

    def healthy() -> bool:
        try:
            return httpx.get(daemon.url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(healthy, "the daemon's /healthz", log)
    except BaseException:
        daemon.kill()
        raise
    return daemon
