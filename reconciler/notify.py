"""Tell people how a run went: messages through apprise, pings to monitors (healthchecks,
Uptime Kuma) over HTTP with httpx. A notification never fails a backup.

Which run sends what to which stream is `reconciler.streaks`'s decision (from the failure streak
before the run); the requests a monitor gets are built by `reconciler.pings`.

Stream URLs often carry tokens (Discord, Slack, Telegram...), so neither error messages nor logs
ever contain a URL: a stream is named by its id and label, and apprise's own messages are passed
through with every secret-looking part of the URL blanked out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

from reconciler.models import NotificationStream, NotificationType, SecretRef, check_monitor_url
from reconciler.pings import Phase, Ping, healthchecks_ping, uptime_kuma_ping
from reconciler.streaks import event_to_send

logger = logging.getLogger("reconciler.notify")

LOG_TAIL_LINES = 20
_LOG_LINE_CHARS = 300
_MIN_SECRET_CHARS = 4  # shorter URL parts ("api", "v1") are not worth blanking out
# A monitor that does not answer within this long is reported; the run has long been recorded.
PING_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class RunOutcome:
    task_id: int
    task_label: str
    successful: bool
    size: int | None  # bytes stored; None when nothing was stored
    duration: timedelta
    reason: str | None  # why it failed, in one line
    log_tail: Sequence[str]
    failed_before: int = 0  # failed runs right before this one (see `reconciler.streaks`)
    drill: bool = False  # a restore drill (`verify`) of the task's newest backup, not a backup


def notification_body(outcome: RunOutcome) -> tuple[str, str]:
    """(title, body) in plain text: task, outcome, size, duration, reason, last log lines; a
    recovery says how many runs had failed, a failure how many in a row."""
    verdict = "succeeded" if outcome.successful else "FAILED"
    if outcome.successful and outcome.failed_before:
        verdict = f"recovered after {_runs(outcome.failed_before)} failed"
    what = "Restore drill" if outcome.drill else "Backup"
    title = f"{what} {verdict}: {outcome.task_label} (task {outcome.task_id})"
    lines = [
        f"Task: {outcome.task_label} (id {outcome.task_id})",
        *(["Run: restore drill (verify of the newest backup)"] if outcome.drill else []),
        f"Outcome: {'successful' if outcome.successful else 'failed'}",
        f"{'Backup size' if outcome.drill else 'Size'}: {_size(outcome.size)}",
        f"Duration: {_duration(outcome.duration)}",
    ]
    if outcome.failed_before:
        streak = (
            f"Failed runs before this one: {outcome.failed_before}"
            if outcome.successful
            else f"Failed runs in a row: {outcome.failed_before + 1}"
        )
        lines.append(streak)
    if outcome.reason:
        lines.append(f"Reason: {outcome.reason}")
    tail = list(outcome.log_tail)[-LOG_TAIL_LINES:]
    if tail:
        lines += ["", f"Last {len(tail)} log lines:"]
        lines += [_clip(line) for line in tail]
    return title, "\n".join(lines)


def _runs(count: int) -> str:
    return "1 run" if count == 1 else f"{count} runs"


def _size(size: int | None) -> str:
    if size is None:
        return "none stored"
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit} ({size} bytes)"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _duration(duration: timedelta) -> str:
    seconds = max(0, round(duration.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min {seconds} s"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def _clip(line: str) -> str:
    line = line.rstrip("\n")
    return line if len(line) <= _LOG_LINE_CHARS else line[: _LOG_LINE_CHARS - 1] + "…"


def send_notifications(
    streams: Sequence[NotificationStream],
    outcome: RunOutcome,
    resolve_secret: Callable[[SecretRef], str],
) -> list[str]:
    """Notify every stream this outcome sends an event to (`streaks.event_to_send`; monitors
    get backups only, never drills); one error message per stream that failed.

    Never raises: a broken stream is reported (and logged) but must not fail the backup.
    """
    title, body = notification_body(outcome)
    phase = Phase.SUCCESS if outcome.successful else Phase.FAILURE
    message = title if outcome.reason is None else f"{title}: {outcome.reason}"
    pings: dict[NotificationType, Callable[[str], Ping]] = {
        NotificationType.HEALTHCHECKS: lambda url: healthchecks_ping(url, phase, body),
        NotificationType.UPTIME_KUMA: lambda url: uptime_kuma_ping(
            url, outcome.successful, message, outcome.duration
        ),
    }
    errors = []
    for stream in streams:
        if outcome.drill and stream.type in pings:
            continue  # a monitor watches the backups' heartbeat; a drill is not one
        event = event_to_send(
            outcome.successful, outcome.failed_before, stream.wanted_events(), stream.repeat
        )
        if event is None:
            continue
        ping = pings.get(stream.type)
        if ping is not None:
            problem = _ping(stream, resolve_secret, ping)
        else:
            problem = _send(stream, title, body, outcome.successful, resolve_secret)
        errors += _reported(stream, problem)
    return errors


def send_run_started(
    streams: Sequence[NotificationStream], resolve_secret: Callable[[SecretRef], str]
) -> list[str]:
    """Ping `/start` of every healthchecks stream, whatever its events: that is how healthchecks
    measures a run's duration and notices one that never ends. Never raises, as above."""
    errors = []
    for stream in streams:
        if stream.type is NotificationType.HEALTHCHECKS:
            problem = _ping(stream, resolve_secret, _healthchecks_start)
            errors += _reported(stream, problem)
    return errors


def _healthchecks_start(url: str) -> Ping:
    return healthchecks_ping(url, Phase.START)


def _reported(stream: NotificationStream, problem: str | None) -> list[str]:
    if problem is None:
        return []
    message = f"notification stream {stream.id} ({stream.label}, {stream.type}): {problem}"
    logger.warning("%s", message)
    return [message]


def _send(
    stream: NotificationStream,
    title: str,
    body: str,
    successful: bool,
    resolve_secret: Callable[[SecretRef], str],
) -> str | None:
    """None when delivered, else why not, with no secret in it."""
    url = ""
    try:
        # Here, not at the top: apprise and its plugins take about 80 ms to import, which every
        # command paid, most runs having no notification to send.
        import apprise

        url = stream.url if isinstance(stream.url, str) else resolve_secret(stream.url)
        sender = apprise.Apprise()
        if not sender.add(url):
            return "the URL is not one apprise understands (check its scheme and parts)"
        with _AppriseWarnings() as warnings:
            delivered = sender.notify(
                body=body,
                title=title,
                notify_type=apprise.NotifyType.SUCCESS
                if successful
                else apprise.NotifyType.FAILURE,
                body_format=apprise.NotifyFormat.TEXT,
            )
        if delivered:
            return None
        return _redact("; ".join(warnings.lines) or "delivery failed", url)
    except Exception as exc:  # a notification must never fail the run
        return _redact(f"{type(exc).__name__}: {exc}", url)


def _ping(
    stream: NotificationStream,
    resolve_secret: Callable[[SecretRef], str],
    request: Callable[[str], Ping],
) -> str | None:
    """Send a monitor the request built from its URL: None when it took it, else why not, with
    no secret in it (a monitor's URL is its credential)."""
    url = ""
    try:
        # Here, not at the top, as apprise below: most runs of a one-off command ping nothing.
        import httpx

        url = stream.url if isinstance(stream.url, str) else resolve_secret(stream.url)
        try:
            check_monitor_url(url)
        except ValueError as exc:
            return _redact(f"the URL from its secret reference {exc}", url)
        ping = request(url)
        response = httpx.request(
            ping.method,
            ping.url,
            content=ping.body.encode(),
            headers={"Content-Type": "text/plain; charset=utf-8"} if ping.body else None,
            timeout=PING_TIMEOUT_SECONDS,
        )
        if not response.is_success:
            return _redact(
                f"the monitor answered {response.status_code} {response.reason_phrase}", url
            )
        return _refused(response.headers.get("content-type", ""), response.text, url)
    except Exception as exc:  # a ping must never fail the run
        return _redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__, url)


def _refused(content_type: str, text: str, url: str) -> str | None:
    """Uptime Kuma answers an unknown or paused push token with `{"ok": false, "msg": ...}`."""
    if not content_type.startswith("application/json"):
        return None
    try:
        answer = json.loads(text)
    except ValueError:
        return None
    if isinstance(answer, dict) and answer.get("ok") is False:
        return _redact(f"the monitor refused the ping: {_clip(str(answer.get('msg', '')))}", url)
    return None


# Which capture the current notify call belongs to. apprise sends from its own worker threads
# but copies the caller's context into them, so this tells concurrent runs' messages apart.
_current_capture: ContextVar[_AppriseWarnings | None] = ContextVar("_current_capture", default=None)


class _AppriseWarnings(logging.Handler):
    """apprise explains failures only in its log: collect what it says about this one call."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def __enter__(self) -> _AppriseWarnings:
        self._token = _current_capture.set(self)
        logging.getLogger("apprise").addHandler(self)
        return self

    def __exit__(self, *_: object) -> None:
        logging.getLogger("apprise").removeHandler(self)
        _current_capture.reset(self._token)

    def emit(self, record: logging.LogRecord) -> None:
        if _current_capture.get() is self:
            self.lines.append(record.getMessage())


def _redact(message: str, url: str) -> str:
    """Blank out the URL and every part of it that could be a token or password."""
    if not url:
        return message
    fragments = {url}
    try:
        parts = urlsplit(url)
        fragments |= {parts.username or "", parts.password or ""}
        fragments |= set(parts.path.split("/"))
        fragments |= {value for _, value in parse_qsl(parts.query)}
    except ValueError:  # an unparseable URL: the whole of it is still blanked out
        pass
    for fragment in sorted(fragments, key=len, reverse=True):
        if len(fragment) >= _MIN_SECRET_CHARS:
            message = message.replace(fragment, "****")
    return message
