"""Run logs through the API: what an interrupted run says, and how much one response carries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.resticcommands import BackupSummary
from reconciler.types import RunStatus
from tests.apirig import START, ApiRig, api_rig

pytestmark = pytest.mark.anyio


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[ApiRig]:
    async with api_rig(tmp_path) as made:
        yield made


async def test_the_latest_log_of_an_interrupted_run_says_a_restart_interrupted_it(
    rig: ApiRig,
) -> None:
    rig.state.runs.start_run(1, "schedule", START)  # the daemon died during this run
    rig.clock.advance(timedelta(minutes=5))
    rig.runner.recover()
    log = (await rig.get("/api/backup-tasks/1/latest-log")).json()["data"]
    assert log["status"] == "failed"
    assert log["output"].endswith("2026-03-10T12:05:00Z interrupted by a daemon restart\n")


async def test_the_latest_log_carries_the_last_thousand_lines_and_says_what_it_left_out(
    rig: ApiRig,
) -> None:
    run_id = rig.state.runs.start_run(1, "manual", START)
    rig.state.runs.append_logs(run_id, [(START, f"line {i}") for i in range(3000)])
    rig.state.runs.finish_run(run_id, RunStatus.SUCCESSFUL, START)
    lines = (await rig.get("/api/backup-tasks/1/latest-log")).json()["data"]["output"].splitlines()
    assert lines[0] == "[2,000 earlier lines not shown]"
    assert lines[1:] == [f"2026-03-10T12:00:00Z line {i}" for i in range(2000, 3000)]


async def test_a_page_of_logs_carries_each_runs_last_hundred_lines(rig: ApiRig) -> None:
    for _ in range(2):
        run_id = rig.state.runs.start_run(1, "manual", START)
        rig.state.runs.append_logs(run_id, [(START, "x" * 100)] * 500)
        rig.state.runs.finish_run(run_id, RunStatus.SUCCESSFUL, START)
    body = (await rig.get("/api/backup-tasks/1/logs")).json()
    for log in body["data"]:
        lines = log["output"].splitlines()
        assert lines[0] == "[400 earlier lines not shown]"
        assert len(lines) == 101


async def test_a_log_of_huge_lines_is_bounded_in_size_too(rig: ApiRig) -> None:
    run_id = rig.state.runs.start_run(1, "manual", START)
    rig.state.runs.append_logs(run_id, [(START, f"{i} " + "y" * 60_000) for i in range(100)])
    rig.state.runs.finish_run(run_id, RunStatus.SUCCESSFUL, START)
    output = (await rig.get("/api/backup-tasks/1/latest-log")).json()["data"]["output"]
    assert len(output) <= 1 << 20
    lines = output.splitlines()
    assert lines[0].startswith("[")
    assert lines[0].endswith("earlier lines not shown]")
    assert lines[-1].startswith("2026-03-10T12:00:00Z 99 ")


async def test_a_run_that_made_a_restic_snapshot_shows_restics_summary_in_the_logs(
    rig: ApiRig,
) -> None:
    summary = BackupSummary("4982ee51" + "ef" * 28, 2048, 4096)
    run_id = rig.state.runs.start_run(1, "manual", START)
    rig.state.runs.finish_run(run_id, RunStatus.SUCCESSFUL, START, size=4096, snapshot=summary)
    shown = {"snapshot_id": summary.snapshot_id, "data_added": 2048, "total_bytes_processed": 4096}

    latest = (await rig.get("/api/backup-tasks/1/latest-log")).json()["data"]
    page = (await rig.get("/api/backup-tasks/1/logs")).json()["data"]

    assert latest["restic"] == shown
    assert [log["restic"] for log in page] == [shown]
