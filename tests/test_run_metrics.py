"""`/metrics` of the daemon as `reconciler serve` wires it, after real backups over SSH, read
back with Prometheus's own text parser."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.types import RunStatus
from tests import configset
from tests.apirig import ApiRig, api_rig
from tests.runs import server_file
from tests.servers import SshServer

pytestmark = pytest.mark.anyio
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def files(tmp_path: Path, sshd: SshServer) -> dict[str, str]:
    """Task 1 backs up a real directory over the test sshd; task 2 (user 2) fails at once (its
    server's port 1 is closed); task 3 never runs."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("some bytes to store\n" * 100)
    return {
        **configset.base_files(),
        "servers/one.yaml": server_file(sshd),
        "servers/two.yaml": configset.server(2, 2, port=1),
        "destinations/one.yaml": configset.destination(1, 1, path=str(tmp_path / "backups")),
        "tasks/1-home.yaml": configset.task(1, 1, source={"type": "files", "path": str(source)}),
        "tasks/2-grace.yaml": configset.task(2, 2),
        "tasks/3-idle.yaml": configset.task(3, 1),
    }


async def scrape(rig: ApiRig) -> Series:
    response = await rig.client.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def run(rig: ApiRig, task_id: int) -> None:
    assert rig.runner.request_run(rig.engine.desired.tasks[task_id]).value == "accepted"
    await asyncio.to_thread(rig.runner.wait, task_id, 120)


def task(task_id: int, **labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"task_id": str(task_id), **labels}.items()))


async def test_runs_are_counted_by_task_and_result(tmp_path: Path, sshd: SshServer) -> None:
    async with api_rig(tmp_path, files(tmp_path, sshd)) as rig:
        await run(rig, 1)
        await run(rig, 1)
        await run(rig, 2)
        series = await scrape(rig)
    assert series["reconciler_runs_total", task(1, result="successful")] == 2
    assert series["reconciler_runs_total", task(1, result="failed")] == 0
    assert series["reconciler_runs_total", task(2, result="failed")] == 1
    assert series["reconciler_runs_total", task(3, result="successful")] == 0, (
        "a task that has not run yet has its series at zero"
    )


async def test_run_durations_and_stored_bytes_are_per_task(tmp_path: Path, sshd: SshServer) -> None:
    async with api_rig(tmp_path, files(tmp_path, sshd)) as rig:
        await run(rig, 1)
        await run(rig, 2)
        record = rig.state.runs.latest_run(1)
        series = await scrape(rig)
    assert record is not None
    assert record.size is not None
    assert record.size > 0
    assert series["reconciler_run_duration_seconds_count", task(1)] == 1
    assert series["reconciler_run_duration_seconds_bucket", task(1, le="+Inf")] == 1
    assert series["reconciler_run_duration_seconds_sum", task(1)] == 0, "the clock is fake"
    assert series["reconciler_stored_bytes_total", task(1)] == record.size
    assert series["reconciler_stored_bytes_total", task(2)] == 0, "a failure stores nothing"


async def test_the_last_success_and_its_size_come_from_the_history_after_a_restart(
    tmp_path: Path, sshd: SshServer
) -> None:
    async with api_rig(tmp_path, files(tmp_path, sshd)) as rig:
        await run(rig, 1)
        await run(rig, 2)
        success = rig.state.runs.latest_run(1)
    assert success is not None
    assert success.status is RunStatus.SUCCESSFUL
    assert success.finished_at is not None
    async with api_rig(tmp_path, clone=True) as restarted:
        series = await scrape(restarted)
    assert series["reconciler_last_success_timestamp_seconds", task(1)] == (
        success.finished_at.timestamp()
    )
    assert series["reconciler_last_backup_size_bytes", task(1)] == success.size
    assert ("reconciler_last_success_timestamp_seconds", task(2)) not in series, "never succeeded"
    assert series["reconciler_runs_total", task(1, result="successful")] == 0, (
        "counters start again at zero in a new process, which Prometheus reads as a reset"
    )


async def test_the_applied_revision_is_the_label_of_an_info_metric(
    tmp_path: Path, sshd: SshServer
) -> None:
    async with api_rig(tmp_path, files(tmp_path, sshd)) as rig:
        series = await scrape(rig)
        revision = rig.engine.revision
    assert revision is not None
    assert series["reconciler_applied_revision_info", (("revision", revision),)] == 1


async def test_each_restic_destination_in_use_has_its_next_prune(
    tmp_path: Path, sshd: SshServer
) -> None:
    on_restic = {
        **files(tmp_path, sshd),
        "destinations/two.yaml": configset.dump(
            {
                "id": 3, "user_id": 1, "label": "vault", "type": "restic",
                "repository": str(tmp_path / "restic"), "password": {"env": "RESTIC_PW"},
            }
        ),
        "tasks/4-vault.yaml": configset.task(4, 1, backup_destination_id=3),
    }  # fmt: skip
    async with api_rig(tmp_path, on_restic) as rig:
        series = await scrape(rig)
    # The rig's clock stands at Tuesday 10 March 2026, 12:00 UTC: the next Sunday 04:00 UTC.
    sunday = datetime(2026, 3, 15, 4, 0, tzinfo=UTC).timestamp()
    assert (
        series[("reconciler_restic_prune_next_timestamp_seconds", (("destination_id", "3"),))]
        == sunday
    )
    assert not any(name == "reconciler_restic_prune_last_timestamp_seconds" for name, _ in series)


async def test_a_missing_restic_is_said_at_start_up_naming_the_destinations(
    tmp_path: Path,
    sshd: SshServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    on_restic = {
        **files(tmp_path, sshd),
        "destinations/two.yaml": configset.dump(
            {
                "id": 3, "user_id": 1, "label": "vault", "type": "restic",
                "repository": str(tmp_path / "restic"), "password": {"env": "RESTIC_PW"},
            }
        ),
        "tasks/4-vault.yaml": configset.task(4, 1, backup_destination_id=3),
    }  # fmt: skip
    # Every program of the PATH but restic.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        for program in Path(directory).glob("*") if Path(directory).is_dir() else ():
            if program.name != "restic" and not (bin_dir / program.name).exists():
                (bin_dir / program.name).symlink_to(program)
    monkeypatch.setenv("PATH", str(bin_dir))
    async with api_rig(tmp_path, on_restic):
        pass
    said = [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]
    assert any(
        "restic 0.14.0 or later is needed" in line and "destinations 3 (vault)" in line
        for line in said
    ), said
