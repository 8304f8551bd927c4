"""The requests a monitor gets, built from its URL (pure logic)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from reconciler.pings import (
    MAX_PUSH_MESSAGE_CHARS,
    Phase,
    Ping,
    healthchecks_ping,
    uptime_kuma_ping,
)


def test_healthchecks_phases_append_start_and_fail_to_the_path_and_keep_the_query() -> None:
    url = "https://hc.example.com/ping/key/db-backup/?create=1"
    assert healthchecks_ping(url, Phase.START) == Ping(
        "POST", "https://hc.example.com/ping/key/db-backup/start?create=1"
    )
    assert healthchecks_ping(url, Phase.FAILURE, "tail").url == (
        "https://hc.example.com/ping/key/db-backup/fail?create=1"
    )
    assert healthchecks_ping(url, Phase.SUCCESS, "ok") == Ping("POST", url, "ok")


def test_uptime_kumas_own_status_msg_and_ping_parameters_are_replaced() -> None:
    url = "https://kuma.example.com/api/push/T0k?status=up&msg=OK&ping="
    ping = uptime_kuma_ping(url, False, "Backup FAILED", timedelta(seconds=1.2345))
    assert ping.method == "GET"
    parts = urlsplit(ping.url)
    assert parts.path == "/api/push/T0k"
    assert parse_qs(parts.query) == {"status": ["down"], "msg": ["Backup FAILED"], "ping": ["1234"]}


@given(st.text(max_size=1000))
def test_an_uptime_kuma_message_is_one_bounded_line(message: str) -> None:
    ping = uptime_kuma_ping("https://kuma.example.com/api/push/x", True, message, timedelta(0))
    [sent] = parse_qs(urlsplit(ping.url).query, keep_blank_values=True)["msg"]
    assert "\n" not in sent
    assert len(sent) <= MAX_PUSH_MESSAGE_CHARS
