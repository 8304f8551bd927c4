"""Before a request body is read: no valid token is a 401, a body over the limit a 413.

Against `reconciler serve` in its own process (real uvicorn), over raw sockets so that what the
client has sent, and when, is exactly known.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import configset
from tests.daemonproc import reconciler
from tests.gitrepo import init_repo
from tests.servers import HOST, free_port, wait_until

MB = 1024 * 1024
# A refusal must come at once: the body it refuses is never sent (or not all of it).
ANSWER_WITHIN = 5.0


@dataclass
class Served:
    port: int
    token: str
    pid: int

    def request(self, head: str, body: bytes = b"") -> bytes:
        """Send `head` (and `body`) on a fresh connection; the response, or b"" if none came."""
        with socket.create_connection((HOST, self.port), timeout=ANSWER_WITHIN) as connection:
            connection.sendall(head.encode() + body)
            return receive(connection)

    def peak_rss(self) -> int:
        """Bytes: the daemon's peak resident set size since the last `reset_peak_rss`."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM in /proc status")

    def reset_peak_rss(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")


def receive(connection: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := connection.recv(65536):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def post_head(path: str, *headers: str) -> str:
    lines = [f"POST {path} HTTP/1.1", f"Host: {HOST}", "Connection: close", *headers]
    lines.append("Content-Type: application/json")
    return "\r\n".join(lines) + "\r\n\r\n"


def status_and_body(response: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert head, "no response within the time limit"
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.startswith(b"{") else {}


@contextmanager
def serving(tmp_path: Path, *flags: str) -> Iterator[Served]:
    repo = tmp_path / "config"
    init_repo(repo, {**configset.base_files(), "tasks/1-home.yaml": configset.task(1)})
    state = tmp_path / "state" / "state.db"
    created = reconciler("token", "create", "--state", str(state), "--user-id", "1", "--name", "t")
    assert created.returncode == 0, created.stderr
    port = free_port()
    log = tmp_path / "daemon.log"
    command = [sys.executable, "-m", "reconciler", "serve", "--repo", str(repo)]
    command += ["--state", str(state), "--port", str(port), *flags]
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)

    def healthy() -> bool:
        try:
            return httpx.get(f"http://{HOST}:{port}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(healthy, "the daemon's /healthz", log)
        yield Served(port, created.stdout.strip(), process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Served]:
    with serving(tmp_path) as served:
        yield served


def test_a_request_without_a_token_is_refused_before_its_body_is_sent(daemon: Served) -> None:
    response = daemon.request(post_head("/api/backup-tasks", f"Content-Length: {200 * MB}"))

    status, body = status_and_body(response)
    assert status == 401
    assert body == {"error": "Unauthorized", "message": "Unauthenticated."}


def test_a_chunked_request_without_a_token_is_refused_before_its_body(daemon: Served) -> None:
    response = daemon.request(post_head("/api/backup-tasks", "Transfer-Encoding: chunked"))

    assert status_and_body(response)[0] == 401


def test_a_request_with_a_wrong_token_is_refused_before_its_body(daemon: Served) -> None:
    head = post_head(
        "/api/backup-tasks", "Authorization: Bearer rk_wrong", f"Content-Length: {200 * MB}"
    )
    assert status_and_body(daemon.request(head))[0] == 401


def test_a_200_mb_unauthenticated_post_leaves_the_daemons_memory_alone(daemon: Served) -> None:
    daemon.reset_peak_rss()
    before = daemon.peak_rss()
    head = post_head("/api/backup-tasks", f"Content-Length: {200 * MB}")
    with socket.create_connection((HOST, daemon.port), timeout=ANSWER_WITHIN) as connection:
        try:
            connection.sendall(head.encode())
            chunk = b"x" * MB
            for _ in range(200):
                connection.sendall(chunk)
        except OSError:
            pass  # refused and closed while we were still sending: as it should be

    assert daemon.peak_rss() - before < 50 * MB


def test_a_body_over_the_limit_is_a_413_before_it_is_sent(daemon: Served) -> None:
    head = post_head(
        "/api/backup-tasks", f"Authorization: Bearer {daemon.token}", f"Content-Length: {MB + 1}"
    )

    status, body = status_and_body(daemon.request(head))

    assert status == 413
    assert body["error"] == "Request Entity Too Large"
    assert body["message"] == "The request body is larger than the limit of 1048576 bytes."


def test_a_chunked_body_over_the_limit_is_a_413(tmp_path: Path) -> None:
    with serving(tmp_path, "--max-body-bytes", "1000") as served:
        head = post_head(
            "/api/backup-tasks",
            f"Authorization: Bearer {served.token}",
            "Transfer-Encoding: chunked",
        )
        chunks = b"".join(b"258\r\n" + b"x" * 600 + b"\r\n" for _ in range(2))

        status, body = status_and_body(served.request(head, chunks))

    assert status == 413
    assert body["message"] == "The request body is larger than the limit of 1000 bytes."


def test_a_chunked_body_within_the_limit_reaches_the_api(daemon: Served) -> None:
    payload = json.dumps({"label": "sent in chunks"}).encode()
    head = post_head(
        "/api/backup-tasks/1", f"Authorization: Bearer {daemon.token}", "Transfer-Encoding: chunked"
    ).replace("POST", "PUT", 1)
    half = len(payload) // 2
    chunks = b"".join(
        f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (payload[:half], payload[half:])
    )

    status, body = status_and_body(daemon.request(head, chunks + b"0\r\n\r\n"))

    assert status == 200
    assert body["data"]["label"] == "sent in chunks"  # type: ignore[index]


def test_the_health_check_needs_no_token(daemon: Served) -> None:
    assert httpx.get(f"http://{HOST}:{daemon.port}/healthz", timeout=5).status_code == 200
