"""Notifications through apprise, delivered to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from reconciler.models import NotificationStream, NotificationType, SecretRef
from reconciler.notify import RunOutcome, notification_body, send_notifications
from tests.servers import free_port

# apprise loads all its plugins on first use; its e-mail plugin imports PGPy, which imports the
# standard library's `imghdr`, deprecated since Python 3.11. Nothing of ours can avoid that import.
pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")

FAILED = RunOutcome(
    task_id=7,
    task_label="Shop database",
    successful=False,
    size=None,
    duration=timedelta(minutes=2, seconds=5),
    reason="mysqldump exited with status 2",
    log_tail=["connecting", "mysqldump: Got error: 1045: Access denied"],
)
SUCCEEDED = RunOutcome(
    task_id=7,
    task_label="Shop database",
    successful=True,
    size=3 * 1024 * 1024 + 512,
    duration=timedelta(hours=1, seconds=3),
    reason=None,
    log_tail=["done"],
)


@dataclass
class Receiver:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP server on 127.0.0.1 recording every JSON POST it gets."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append({"path": self.path, "json": json.loads(self.rfile.read(length))})
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test asserts on what arrived."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(f"json://127.0.0.1:{server.server_address[1]}/hook", received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def stream(
    url: str | SecretRef, *, on_success: bool = False, on_failure: bool = True, id: int = 1
) -> NotificationStream:
    return NotificationStream(
        id=id,
        user_id=1,
        label=f"hook {id}",
        type=NotificationType.WEBHOOK,
        url=url,
        on_success=on_success,
        on_failure=on_failure,
    )


def no_secrets(ref: SecretRef) -> str:
    raise AssertionError(f"no secret expected, asked for {ref}")


def closed_port_url(path: str = "hook") -> str:
    return f"json://127.0.0.1:{free_port()}/{path}"


def test_a_failure_reaches_a_real_http_receiver(receiver: Receiver) -> None:
    assert send_notifications([stream(receiver.url)], FAILED, no_secrets) == []
    [request] = receiver.requests
    assert request["path"] == "/hook"
    assert request["json"]["title"] == "Backup FAILED: Shop database (task 7)"
    assert "mysqldump exited with status 2" in request["json"]["message"]
    assert "Access denied" in request["json"]["message"]
    assert request["json"]["type"] == "failure"


def test_a_success_is_sent_to_a_stream_that_asks_for_successes(receiver: Receiver) -> None:
    assert send_notifications([stream(receiver.url, on_success=True)], SUCCEEDED, no_secrets) == []
    [request] = receiver.requests
    assert request["json"]["type"] == "success"


def test_a_success_is_not_sent_to_a_stream_that_only_wants_failures(receiver: Receiver) -> None:
    assert send_notifications([stream(receiver.url)], SUCCEEDED, no_secrets) == []
    assert receiver.requests == []


def test_a_failure_is_not_sent_to_a_stream_that_opted_out(receiver: Receiver) -> None:
    quiet = stream(receiver.url, on_success=True, on_failure=False)
    assert send_notifications([quiet], FAILED, no_secrets) == []
    assert receiver.requests == []


def test_a_stream_at_a_closed_port_yields_an_error_and_does_not_raise(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    streams = [stream(closed_port_url(), id=1), stream(receiver.url, id=2)]
    with caplog.at_level(logging.WARNING, logger="reconciler.notify"):
        errors = send_notifications(streams, FAILED, no_secrets)
    [error] = errors
    assert error.startswith("notification stream 1 (hook 1, webhook): ")
    assert "Connection error" in error, "apprise's own explanation is passed on"
    assert len(receiver.requests) == 1, "the other stream is still notified"
    assert [
        record.getMessage() for record in caplog.records if record.name == "reconciler.notify"
    ] == [error]


def test_a_url_from_a_secret_is_resolved_and_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    secret_url = closed_port_url("s3cr3t-t0ken-abc")

    def resolve(ref: SecretRef) -> str:
        assert ref == SecretRef(secret="hook-url")
        return secret_url

    with caplog.at_level(logging.DEBUG, logger="reconciler.notify"):
        [error] = send_notifications([stream(SecretRef(secret="hook-url"))], FAILED, resolve)
    assert "s3cr3t-t0ken-abc" not in error
    ours = [record.getMessage() for record in caplog.records if record.name == "reconciler.notify"]
    assert ours == [error]


def test_a_secret_that_cannot_be_resolved_fails_only_its_own_stream(receiver: Receiver) -> None:
    def resolve(ref: SecretRef) -> str:
        raise LookupError(f"environment variable {ref.env} is not set")

    streams = [stream(SecretRef(env="HOOK_URL"), id=1), stream(receiver.url, id=2)]
    [error] = send_notifications(streams, FAILED, resolve)
    assert "HOOK_URL is not set" in error
    assert len(receiver.requests) == 1


def test_a_url_apprise_does_not_understand_is_an_error() -> None:
    [error] = send_notifications([stream("nonsense://what")], FAILED, no_secrets)
    assert "not one apprise understands" in error


def test_the_body_names_task_outcome_size_duration_and_reason() -> None:
    title, body = notification_body(SUCCEEDED)
    assert title == "Backup succeeded: Shop database (task 7)"
    assert body.splitlines()[:4] == [
        "Task: Shop database (id 7)",
        "Outcome: successful",
        "Size: 3.0 MiB (3146240 bytes)",
        "Duration: 1 h 0 min 3 s",
    ]
    assert body.endswith("Last 1 log lines:\ndone")


def test_the_body_of_a_failure_gives_its_reason_and_says_nothing_was_stored() -> None:
    _, body = notification_body(FAILED)
    assert "Size: none stored" in body
    assert "Duration: 2 min 5 s" in body
    assert "Reason: mysqldump exited with status 2" in body


def test_the_body_keeps_only_the_last_twenty_clipped_log_lines() -> None:
    noisy = RunOutcome(
        7,
        "t",
        False,
        None,
        timedelta(seconds=1),
        "x",
        [f"line {n}" for n in range(50)] + ["y" * 1000],
    )
    _, body = notification_body(noisy)
    tail = body.split("log lines:\n")[1].splitlines()
    assert tail[0] == "line 31"
    assert len(tail) == 20
    assert len(tail[-1]) == 300
