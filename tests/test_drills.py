"""Restore drills in the daemon as `reconciler serve` wires it: the drill scheduler fires
`verify.schedule`, the drill verifies the newest real backup (over the test sshd) and is recorded
as a `verify` run; a failed drill notifies a real HTTP receiver and `/metrics` shows the last
verified time, from the history, after a restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.runner import Admission
from reconciler.state.runs import RunRecord
from reconciler.types import RunKind, RunStatus
from tests import configset
from tests.apirig import START, ApiRig, api_rig
from tests.gitrepo import commit_files
from tests.receiver import Receiver, http_receiver
from tests.runs import server_file
from tests.servers import PostgresServer, SshServer
from tests.test_run_metrics import scrape, task
from tests.test_verify import flip_byte

pytestmark = pytest.mark.anyio
WAIT_SECONDS = 60.0


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with http_receiver() as made:
        yield made


def files(tmp_path: Path, sshd: SshServer, receiver: Receiver) -> dict[str, str]:
    """Task 1 backs up a real directory daily at 02:30 and drills daily at 12:30 (START is
    12:00), notifying a webhook on failure."""
    source = tmp_path / "source"
    source.mkdir()
    (source / "a.txt").write_text("some bytes to store\n" * 100)
    hook = {"id": 1, "user_id": 1, "label": "hook", "type": "webhook"}
    return {
        **configset.base_files(),
        "servers/one.yaml": server_file(sshd),
        "destinations/one.yaml": configset.destination(1, 1, path=str(tmp_path / "backups")),
        "notifications/hook.yaml": configset.dump(
            {**hook, "url": f"json://127.0.0.1:{receiver.port}/hook"}
        ),
        "tasks/1-home.yaml": configset.task(
            1,
            1,
            source={"type": "files", "path": str(source)},
            notification_stream_ids=[1],
            verify={"schedule": {"frequency": "daily", "time": "12:30"}},
        ),
    }


async def back_up(rig: ApiRig) -> Path:
    """One manual backup of task 1; returns the stored file."""
    assert rig.runner.request_run(rig.engine.desired.tasks[1]) is Admission.ACCEPTED
    await asyncio.to_thread(rig.runner.wait, 1, 120)
    (stored,) = (rig.daemon.settings.repo.parent / "backups").iterdir()
    return stored


async def drill_ran(rig: ApiRig) -> RunRecord:
    """Move the clock to the drill's slot and wait for the drill's run to end."""
    rig.clock.advance(timedelta(minutes=30))
    rig.daemon.drills.wake()
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        latest = rig.state.runs.latest_run(1)
        if latest is not None and latest.kind is RunKind.VERIFY and latest.finished_at:
            return latest
        await asyncio.sleep(0.05)
    raise AssertionError("the drill did not run")


async def test_a_scheduled_drill_verifies_the_newest_backup_as_a_verify_run(
    tmp_path: Path, sshd: SshServer, receiver: Receiver
) -> None:
    async with api_rig(tmp_path, files(tmp_path, sshd, receiver)) as rig:
        stored = await back_up(rig)
        drill = await drill_ran(rig)
        backups = sorted(path.name for path in stored.parent.iterdir())

    assert (drill.kind, drill.status, drill.trigger) == (
        RunKind.VERIFY,
        RunStatus.SUCCESSFUL,
        "schedule",
    )
    assert f"verified {stored.name} of task 1: 1 files" in drill.output
    assert drill.backup_name is None, "a drill stores nothing"
    assert backups == [stored.name]
    assert receiver.requests == [], "the stream wants failures only"


async def test_a_drill_that_finds_a_flipped_byte_fails_and_notifies_that_it_was_a_drill(
    tmp_path: Path, sshd: SshServer, receiver: Receiver
) -> None:
    async with api_rig(tmp_path, files(tmp_path, sshd, receiver)) as rig:
        stored = await back_up(rig)
        flip_byte(stored, stored.stat().st_size // 2)
        drill = await drill_ran(rig)
        series = await scrape(rig)

    assert (drill.kind, drill.status) == (RunKind.VERIFY, RunStatus.FAILED)
    assert drill.reason is not None
    assert "is not what run 1 recorded" in drill.reason
    [request] = receiver.to("/hook")
    message = request.json()
    assert message["title"] == "Restore drill FAILED: task 1 (task 1)"
    assert "Run: restore drill (verify of the newest backup)" in message["message"]
    assert "is not what run 1 recorded" in message["message"]
    assert ("reconciler_task_last_verified_timestamp_seconds", task(1)) not in series


async def test_the_last_verified_time_is_in_the_metrics_after_a_restart(
    tmp_path: Path, sshd: SshServer, receiver: Receiver
) -> None:
    async with api_rig(tmp_path, files(tmp_path, sshd, receiver)) as rig:
        await back_up(rig)
        drill = await drill_ran(rig)
    assert drill.finished_at is not None
    async with api_rig(tmp_path, clone=True) as restarted:
        series = await scrape(restarted)

    assert series["reconciler_task_last_verified_timestamp_seconds", task(1)] == (
        drill.finished_at.timestamp()
    )
    assert series["reconciler_last_success_timestamp_seconds", task(1)] < (
        drill.finished_at.timestamp()
    ), "the last success is the backup's, not the drill's"


async def test_a_drill_is_refused_while_the_tasks_backup_is_admitted(
    tmp_path: Path, sshd: SshServer, receiver: Receiver
) -> None:
    async with api_rig(tmp_path, files(tmp_path, sshd, receiver)) as rig:
        resolved = rig.engine.desired.tasks[1]
        assert rig.runner.request_run(resolved) is Admission.ACCEPTED
        refused = await asyncio.to_thread(rig.runner.queue_drill, resolved, START)
        await asyncio.to_thread(rig.runner.wait, 1, 120)
        page, total = rig.state.runs.page(1, 0, 10)

    assert refused is Admission.ALREADY_RUNNING
    assert (total, page[0].kind) == (1, RunKind.BACKUP)


async def test_a_drill_before_any_backup_fails_saying_there_is_nothing_to_verify(
    tmp_path: Path, sshd: SshServer, receiver: Receiver
) -> None:
    async with api_rig(tmp_path, files(tmp_path, sshd, receiver)) as rig:
        drill = await drill_ran(rig)

    assert drill.status is RunStatus.FAILED
    assert drill.reason == "there is no successful backup to verify yet"


async def test_a_drill_missed_while_the_daemon_was_down_runs_once_at_start(
    tmp_path: Path, sshd: SshServer, receiver: Receiver
) -> None:
    config = files(tmp_path, sshd, receiver)
    async with api_rig(tmp_path, config) as rig:
        earlier = rig.state.runs.start_run(1, "schedule", START - timedelta(days=1), RunKind.VERIFY)
        rig.state.runs.finish_run(earlier, RunStatus.SUCCESSFUL, START - timedelta(days=1))
    config["tasks/1-home.yaml"] = config["tasks/1-home.yaml"].replace("12:30", "11:00")
    commit_files(tmp_path / "config", config, "Drills at 11:00")
    async with api_rig(tmp_path, clone=True) as restarted:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            latest = restarted.state.runs.latest_run(1)
            if latest is not None and latest.id != earlier and latest.finished_at is not None:
                break
            await asyncio.sleep(0.05)
        page, _ = restarted.state.runs.page(1, 0, 10)

    assert [(run.kind, run.started_at) for run in page] == [
        (RunKind.VERIFY, START),
        (RunKind.VERIFY, START - timedelta(days=1)),
    ]


def dump_files(tmp_path: Path, sshd: SshServer, postgres: PostgresServer) -> dict[str, str]:
    """Task 1 dumps the `drilled` PostgreSQL database and its drills load the dump into a
    scratch database on server 1 (the same server; the password is in a file)."""
    postgres.sql("DROP DATABASE IF EXISTS drilled")
    postgres.sql("CREATE DATABASE drilled")
    postgres.sql(
        "CREATE TABLE orders (id int PRIMARY KEY);"
        "INSERT INTO orders SELECT generate_series(1, 42);",
        "drilled",
    )
    password = tmp_path / "pg-password"
    password.write_text(postgres.password + "\n")
    database = {
        "engine": "postgresql",
        "host": postgres.host,
        "port": postgres.port,
        "username": postgres.username,
        "password": {"file": str(password)},
    }
    return {
        **configset.base_files(),
        "servers/one.yaml": server_file(sshd, database=database),
        "destinations/one.yaml": configset.destination(1, 1, path=str(tmp_path / "backups")),
        "tasks/1-orders.yaml": configset.task(
            1,
            1,
            source={"type": "database", "database_name": "drilled"},
            verify={"schedule": {"frequency": "daily", "time": "12:30"}, "load_into": 1},
        ),
    }


@pytest.mark.servers
async def test_a_drill_with_load_into_loads_the_dump_and_counts_its_rows(
    tmp_path: Path, sshd: SshServer, postgres: PostgresServer
) -> None:
    async with api_rig(tmp_path, dump_files(tmp_path, sshd, postgres)) as rig:
        await back_up(rig)
        drill = await drill_ran(rig)

    assert (drill.kind, drill.status) == (RunKind.VERIFY, RunStatus.SUCCESSFUL), drill.output
    assert "restore drill: table public.orders: 42 rows dumped, 42 loaded" in drill.output
    assert f"loaded the dump into reconciler_drill_1_{drill.id} on server 1: 1 tables, 42 rows" in (
        drill.output
    )
    assert postgres.sql("SELECT datname FROM pg_database WHERE datname LIKE 'reconciler%'") == ""
