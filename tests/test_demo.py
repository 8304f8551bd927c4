"""`scripts/demo` as a newcomer runs it, with another port than the default: what it says is
true (the token it stores is not one to store by hand, the curl hint reaches the daemon)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.servers import ServerStartError, free_port, wait_until

DEMO = Path(__file__).resolve().parent.parent / "scripts" / "demo"


@dataclass(frozen=True)
class Demo:
    output: str
    data: Path
    port: int
    hint_answered: bool
    exit_code: int


def _hint(output: str) -> list[str]:
    (line,) = [line for line in output.splitlines() if line.startswith("demo: try  curl ")]
    return shlex.split(line.removeprefix("demo: try  "))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The demo started once on a free port, asked what its hint says, then stopped."""
    data = tmp_path_factory.mktemp("demo")
    port = free_port()
    log = data / "demo.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(DEMO), "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RECONCILER_DATA": str(data), "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_until(lambda: "demo: try  curl" in log.read_text(), "the demo's curl hint", log)
        hint = _hint(log.read_text())
        url, token = hint[-1], (data / "demo-token").read_text().strip()

        def answers() -> bool:
            try:
                headers = {"Authorization": f"Bearer {token}"}
                return httpx.get(url, headers=headers, timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        # The daemon logs that it serves a moment before its port answers (and a loaded machine
        # stretches the moment), so the hint is asked until it answers, within a bound.
        try:
            wait_until(answers, "an answer at the hint's URL", log)
            answered = True
        except ServerStartError:
            answered = False
    finally:
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=60)
    return Demo(log.read_text(), data, port, answered, exit_code)


def test_the_demo_stores_its_token_without_asking_to_store_it(demo: Demo) -> None:
    assert "shown once" not in demo.output
    token = demo.data / "demo-token"
    assert f"stored it in {token}" in demo.output
    assert token.stat().st_mode & 0o777 == 0o600
    assert token.read_text().strip() not in demo.output


def test_the_demos_curl_hint_names_the_port_it_was_started_with(demo: Demo) -> None:
    assert _hint(demo.output)[-1] == f"http://127.0.0.1:{demo.port}/api/backup-tasks"
    assert demo.hint_answered


def test_the_demo_stops_cleanly_on_sigterm(demo: Demo) -> None:
    assert demo.exit_code == 0
    assert "reconciler.daemon: stopped" in demo.output
