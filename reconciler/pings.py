"""The HTTP requests that tell a monitor about a run, built from its URL. Pure: `notify` sends them.

healthchecks.io (and compatible servers such as a self-hosted Healthchecks): `<url>/start` when a
run starts (so the check measures its duration), `<url>` on success, `<url>/fail` on failure, each
a POST whose body the check's log shows. Uptime Kuma: its push URL with `status=up|down`, `msg`
and `ping` (the run's duration in milliseconds) as query parameters, whatever the pasted URL's
own query said for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Uptime Kuma keeps `msg` in its heartbeat list: one readable line, not a log.
MAX_PUSH_MESSAGE_CHARS = 250


class Phase(StrEnum):
    START = "start"
    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class Ping:
    method: str
    url: str
    body: str = ""


def healthchecks_ping(url: str, phase: Phase, body: str = "") -> Ping:
    """`url` with `/start` or `/fail` appended to its path (its query kept), as a POST of `body`."""
    parts = urlsplit(url)
    suffix = {Phase.START: "/start", Phase.SUCCESS: "", Phase.FAILURE: "/fail"}[phase]
    path = parts.path.rstrip("/") + suffix if suffix else parts.path
    return Ping("POST", urlunsplit(parts._replace(path=path)), body)


def uptime_kuma_ping(url: str, successful: bool, message: str, duration: timedelta) -> Ping:
    """The push URL with this run's status, message and duration as its query."""
    parts = urlsplit(url)
    ours = {"status", "msg", "ping"}
    kept = [(key, value) for key, value in parse_qsl(parts.query) if key not in ours]
    line = " ".join(message.split())
    if len(line) > MAX_PUSH_MESSAGE_CHARS:
        line = line[: MAX_PUSH_MESSAGE_CHARS - 1] + "…"
    query = [
        *kept,
        ("status", "up" if successful else "down"),
        ("msg", line),
        ("ping", str(max(0, round(duration.total_seconds() * 1000)))),
    ]
    return Ping("GET", urlunsplit(parts._replace(query=urlencode(query))))
