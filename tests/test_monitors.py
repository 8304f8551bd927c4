"""Monitors and notification events with real backups over SSH, received by a real HTTP server:
healthchecks pings, Uptime Kuma pushes, apprise messages, failure streaks and recoveries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from reconciler.models import (
    NotificationEvent,
    NotificationStream,
    NotificationType,
    ResolvedTask,
    SecretRef,
)
from reconciler.types import RunStatus
from tests.clock import TickingClock
from tests.receiver import Receiver, http_receiver
from tests.runs import T0, Harness, files_task
from tests.servers import SshServer, free_port

# apprise loads all its plugins on first use; its e-mail plugin imports the deprecated imghdr.
pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")

HC = "/ping/0b7a5e4c-check"
KUMA = "/api/push/kumaToken42"
HOOK = "/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with http_receiver() as made:
        yield made


def stream(
    stream_id: int, kind: NotificationType, url: str | SecretRef, **fields: Any
) -> NotificationStream:
    return NotificationStream(
        id=stream_id, user_id=1, label=f"{kind.value} {stream_id}", type=kind, url=url, **fields
    )


def healthchecks(receiver: Receiver, **fields: Any) -> NotificationStream:
    return stream(1, NotificationType.HEALTHCHECKS, receiver.url(HC), **fields)


def kuma(receiver: Receiver, **fields: Any) -> NotificationStream:
    url = receiver.url(KUMA) + "?status=up&msg=OK&ping=&keep=me"
    return stream(2, NotificationType.UPTIME_KUMA, url, **fields)


def webhook(receiver: Receiver, **fields: Any) -> NotificationStream:
    url = f"json://127.0.0.1:{receiver.port}{HOOK}"
    return stream(3, NotificationType.WEBHOOK, url, **fields)


class Fixture:
    """A files task on the test sshd whose source can be made to exist (success) or not."""

    def __init__(self, sshd: SshServer, tmp_path: Path, *streams: NotificationStream) -> None:
        self.source = tmp_path / "src"
        self.sshd = sshd
        self.destination = tmp_path / "dest"
        self.harness = Harness(tmp_path)
        self.task: ResolvedTask = files_task(sshd, self.destination, self.source).model_copy(
            update={"notifications": streams}
        )

    def run(self, *, succeed: bool) -> RunStatus:
        if succeed and not self.source.exists():
            self.source.mkdir()
            (self.source / "a.txt").write_text("a")
        if not succeed and self.source.exists():
            (self.source / "a.txt").unlink()
            self.source.rmdir()
        status = self.harness.run(self.task)
        assert status is (RunStatus.SUCCESSFUL if succeed else RunStatus.FAILED)
        self.harness.clock.advance(timedelta(hours=1))
        return status


def test_a_successful_run_pings_healthchecks_start_then_success_with_its_summary(
    sshd: SshServer, tmp_path: Path, receiver: Receiver
) -> None:
    Fixture(sshd, tmp_path, healthchecks(receiver)).run(succeed=True)
    pings = [(request.method, request.path) for request in receiver.requests]
    assert pings == [("POST", f"{HC}/start"), ("POST", HC)]
    assert "Outcome: successful" in receiver.requests[1].body


def test_a_failed_run_pings_healthchecks_fail_with_the_logs_tail(
    sshd: SshServer, tmp_path: Path, receiver: Receiver
) -> None:
    Fixture(sshd, tmp_path, healthchecks(receiver)).run(succeed=False)
    assert [request.path for request in receiver.requests] == [f"{HC}/start", f"{HC}/fail"]
    body = receiver.requests[1].body
    assert "Outcome: failed" in body
    assert "log lines:" in body
    assert "connecting to" in body, "the run's own log lines are in the body"


def test_healthchecks_start_is_pinged_even_when_the_stream_wants_no_successes(
    sshd: SshServer, tmp_path: Path, receiver: Receiver
) -> None:
    Fixture(sshd, tmp_path, healthchecks(receiver, events=["failure"])).run(succeed=True)
    assert [request.path for request in receiver.requests] == [f"{HC}/start"]


def test_uptime_kuma_is_pushed_the_status_message_and_duration_in_ms(
    sshd: SshServer, tmp_path: Path, receiver: Receiver
) -> None:
    made = Fixture(sshd, tmp_path, kuma(receiver))
    made.harness.runner = made.harness.new_runner(clock=TickingClock(T0, timedelta(seconds=1)))
    made.run(succeed=True)
    record = made.harness.state.runs.latest_run(made.task.id)
    assert record is not None
    assert record.finished_at is not None
    [push] = receiver.requests
    assert (push.method, push.path) == ("GET", KUMA)
    assert push.query["status"] == ["up"]
    assert push.query["keep"] == ["me"], "the pasted URL's other parameters are kept"
    assert push.query["msg"] == ["Backup succeeded: task 1 (task 1)"]
    elapsed = (record.finished_at - record.started_at).total_seconds() * 1000
    assert push.query["ping"] == [str(round(elapsed))]
    assert elapsed > 0


def test_uptime_kuma_is_pushed_down_with_the_reason(
    sshd: SshServer, tmp_path: Path, receiver: Receiver
) -> None:
    Fixture(sshd, tmp_path, kuma(receiver)).run(succeed=False)
    [push] = receiver.requests
    assert push.query["status"] == ["down"]
    assert push.query["msg"][0].startswith("Backup FAILED: task 1 (task 1): ")


def test_a_streak_of_failures_sends_one_message_and_one_fail_ping(
    sshd: SshServer, tmp_path: Path, receiver: Receiver
) -> None:
    made = Fixture(sshd, tmp_path, healthchecks(receiver), webhook(receiver))
    for _ in range(3):
        made.run(succeed=False)
    assert len(receiver.to(HOOK)) == 1
    assert len(receiver.to(f"{HC}/fail")) == 1
    assert len(receiver.to(f"{HC}/start")) == 3


def test_a_stream_with_repeat_gets_every_failure_of_a_streak_with_its_count(
    sshd: SshServer, tmp_path: Path, receiver: Receiver
) -> None:
    made = Fixture(sshd, tmp_path, webhook(receiver, events=["failure"], repeat=True))
    for _ in range(3):
        made.run(succeed=False)
    messages = [request.json()["message"] for request in receiver.to(HOOK)]
    assert len(messages) == 3
    assert "Failed runs in a row: 3" in messages[2]


def test_the_recovery_message_says_how_many_runs_failed(
    sshd: SshServer, tmp_path: Path, receiver: Receiver
) -> None:
    made = Fixture(sshd, tmp_path, webhook(receiver, events=["failure", "recovery"]))
    made.run(succeed=True)
    for _ in range(2):
        made.run(succeed=False)
    made.run(succeed=True)
    made.run(succeed=True)
    titles = [request.json()["title"] for request in receiver.to(HOOK)]
    assert titles == [
        "Backup FAILED: task 1 (task 1)",
        "Backup recovered after 2 runs failed: task 1 (task 1)",
    ]
    assert "Failed runs before this one: 2" in receiver.to(HOOK)[1].json()["message"]


def test_a_stream_that_wants_every_success_gets_them_all(
    sshd: SshServer, tmp_path: Path, receiver: Receiver
) -> None:
    made = Fixture(sshd, tmp_path, webhook(receiver, events=["success"]))
    for succeed in (True, False, True, True):
        made.run(succeed=succeed)
    types = [request.json()["type"] for request in receiver.to(HOOK)]
    assert types == ["success"] * 3


def test_a_streak_is_remembered_across_a_restart(
    sshd: SshServer, tmp_path: Path, receiver: Receiver
) -> None:
    made = Fixture(sshd, tmp_path, webhook(receiver))
    made.run(succeed=False)
    made.harness.runner = made.harness.new_runner()  # a new pipeline: nothing in memory
    made.run(succeed=False)
    assert len(receiver.to(HOOK)) == 1


def test_a_monitor_that_does_not_answer_never_fails_the_backup(
    sshd: SshServer, tmp_path: Path
) -> None:
    down = stream(1, NotificationType.HEALTHCHECKS, f"http://127.0.0.1:{free_port()}/check")
    made = Fixture(sshd, tmp_path, down)
    made.run(succeed=True)
    record = made.harness.state.runs.latest_run(made.task.id)
    assert record is not None
    failures = [line for line in record.output.splitlines() if "notification failed" in line]
    assert len(failures) == 2, "the start and the success ping are each reported"
    assert "notification stream 1 (healthchecks 1, healthchecks): ConnectError" in failures[0]


def test_a_monitor_that_refuses_the_push_is_reported_without_its_token(
    sshd: SshServer, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.status = 404
    receiver.content_type = "application/json; charset=utf-8"
    receiver.answer = b'{"ok":false,"msg":"Monitor not found or not active."}'
    made = Fixture(sshd, tmp_path, kuma(receiver))
    made.run(succeed=True)
    record = made.harness.state.runs.latest_run(made.task.id)
    assert record is not None
    assert "the monitor answered 404 Not Found" in record.output
    assert "kumaToken42" not in record.output


def test_an_uptime_kuma_answer_of_ok_false_is_a_failed_ping(
    sshd: SshServer, tmp_path: Path, receiver: Receiver
) -> None:
    receiver.content_type = "application/json"
    receiver.answer = b'{"ok":false,"msg":"Monitor is not active"}'
    made = Fixture(sshd, tmp_path, kuma(receiver))
    made.run(succeed=True)
    record = made.harness.state.runs.latest_run(made.task.id)
    assert record is not None
    assert "the monitor refused the ping: Monitor is not active" in record.output


def test_a_monitor_url_from_a_secret_is_resolved_and_checked(
    sshd: SshServer, tmp_path: Path, receiver: Receiver
) -> None:
    made = Fixture(
        sshd,
        tmp_path,
        stream(1, NotificationType.HEALTHCHECKS, SecretRef(env="HC_URL")),
        stream(2, NotificationType.HEALTHCHECKS, SecretRef(env="NOT_HTTP")),
    )
    made.harness.secrets = type(made.harness.secrets)(
        tmp_path / "secrets2.json",
        {"HC_URL": receiver.url(HC), "NOT_HTTP": "ftp://127.0.0.1/s3cr3tPart"},
    )
    made.harness.runner = made.harness.new_runner()
    made.run(succeed=True)
    assert [request.path for request in receiver.requests] == [f"{HC}/start", HC]
    record = made.harness.state.runs.latest_run(made.task.id)
    assert record is not None
    assert "must be an http:// or https:// URL" in record.output
    assert "s3cr3tPart" not in record.output


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://hc.example.com/x", "must be an http:// or https:// URL"),
        ("json://hc.example.com/x", "must be an http:// or https:// URL"),
        ("https:///no-host", "must name a host"),
        ("https://hc.example.com:99999/x", "is not a valid URL"),
        ("https://hc.example.com/a b", "must not contain spaces"),
    ],
)
def test_a_monitor_url_that_is_not_http_is_a_config_error(url: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        stream(1, NotificationType.HEALTHCHECKS, url)


def test_events_and_on_failure_together_are_a_config_error() -> None:
    with pytest.raises(ValidationError, match="give either events or on_failure, not both"):
        stream(1, NotificationType.WEBHOOK, "json://hook.example.com/", events=[], on_failure=True)


def test_an_unknown_event_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="failure"):
        stream(1, NotificationType.WEBHOOK, "json://hook.example.com/", events=["failures"])


def test_existing_streams_keep_their_events_and_monitors_get_every_outcome() -> None:
    hook = "json://hook.example.com/"
    failure, success = NotificationEvent.FAILURE, NotificationEvent.SUCCESS
    assert stream(1, NotificationType.WEBHOOK, hook).wanted_events() == {failure}
    both = stream(1, NotificationType.SLACK, hook, on_success=True)
    assert both.wanted_events() == {failure, success}
    monitor = stream(1, NotificationType.UPTIME_KUMA, "https://kuma.example.com/api/push/x")
    assert monitor.wanted_events() == {failure, success}
