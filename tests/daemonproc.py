"""`reconciler serve` in its own process, as a user runs it: started, reached over HTTP, stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.servers import free_port, wait_until


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


def reconciler(
    *args: str | Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def create_token(state: Path | str) -> str:
    created = reconciler("token", "create", "--state", state, "--user-id", "1", "--name", "t")
    assert created.returncode == 0, created.stderr
    return created.stdout.strip()


@contextmanager
def serving(
    repo: Path,
    state: Path | str,
    token: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    options: Sequence[str | Path] = (),
) -> Iterator[RunningDaemon]:
    """The daemon on `repo` and `state`, healthy; stopped with SIGTERM on exit. Its output is
    appended to `log`, so restarts keep one log. `options`: more `serve` options."""
    port = free_port()
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "serve", "--repo", str(repo),
             "--state", str(state), "--port", str(port), *map(str, options)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )  # fmt: skip
    running = RunningDaemon(repo, f"http://127.0.0.1:{port}", token, process, log)

    def healthy() -> bool:
        try:
            return httpx.get(running.url + "/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(healthy, "the daemon's /healthz", log)
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
