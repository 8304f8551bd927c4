"""What the status page says of a task, decided without I/O: sizes, durations, the red mark."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml

from reconciler.api.statusview import duration_text, size_text, task_row
from reconciler.health import Timing
from reconciler.models import BackupTask, LocalDestination, RemoteServer, ResolvedTask, User
from reconciler.state.runs import RunSummary
from reconciler.types import RunStatus
from tests import configset
from tests.test_health import daily

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("size", "text"),
    [(None, "-"), (0, "0 B"), (999, "999 B"), (1234, "1.2 kB"), (5_600_000, "5.6 MB"),
     (7 * 10**12, "7.0 TB"), (8 * 10**15, "8000.0 TB")],
)  # fmt: skip
def test_a_size_is_shown_in_powers_of_1000(size: int | None, text: str) -> None:
    assert size_text(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0.4 s"), (59.9, "59.9 s"), (184, "3 min 4 s"), (7500, "2 h 5 min")],
)
def test_a_duration_is_shown_in_its_largest_units(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def resolved(task_id: int = 1) -> ResolvedTask:
    return ResolvedTask(
        task=BackupTask.model_validate(yaml.safe_load(configset.task(task_id))),
        owner=User(id=1, name="Ada", email="ada@example.com"),
        server=RemoteServer.model_validate(yaml.safe_load(configset.server(1, 1))),
        destination=LocalDestination.model_validate(yaml.safe_load(configset.destination(1, 1))),
    )


def run(status: RunStatus, ago: timedelta) -> RunSummary:
    return RunSummary(1, 1, status, "api", NOW - ago, NOW - ago + timedelta(seconds=3), 10)


def test_a_new_tasks_failed_run_gets_the_red_mark() -> None:
    new = Timing(daily(), False, NOW - timedelta(minutes=30))  # no slot due since it was added

    row = task_row(resolved(), new, [run(RunStatus.FAILED, timedelta(minutes=5))], None, "UTC", NOW)

    assert row.attention
    assert row.verdict == "last run failed"


def test_a_missed_slot_gets_the_red_mark_though_an_older_run_succeeded() -> None:
    tracked = Timing(daily("02:30"), False, NOW - timedelta(days=5))

    row = task_row(
        resolved(), tracked, [run(RunStatus.SUCCESSFUL, timedelta(days=1))], None, "UTC", NOW
    )

    assert row.attention
    assert row.verdict == "last slot missed"
    assert row.last_run is not None
    assert row.last_run.status == "successful"


def test_a_task_whose_last_slot_succeeded_has_no_red_mark() -> None:
    tracked = Timing(daily("02:30"), False, NOW - timedelta(days=5))
    ran = run(RunStatus.SUCCESSFUL, timedelta(hours=9, minutes=29))

    row = task_row(resolved(), tracked, [ran], NOW + timedelta(hours=14), "UTC", NOW)

    assert not row.attention
    assert row.last_run is not None
    assert row.last_run.size == "10 B"
    assert row.next_run == "2026-03-11 02:00"
