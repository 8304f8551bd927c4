"""Admission, for scheduled and manual runs alike: paused and busy decided once, a server's
`max_parallel_runs` as seen on the remote, runs queued behind the worker limit or their server
shown queued, with their start time when they really start; recovery and shutdown of queued runs.

The remote is a real OpenSSH login whose forced command records when each backup command starts
and ends there (tests.recording), so concurrency is what the server saw.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.backup import INTERRUPTED_BY_STOP
from reconciler.documents import parse_file
from reconciler.models import RemoteServer, ResolvedTask
from reconciler.runner import Admission
from reconciler.state.runs import NEVER_STARTED
from reconciler.types import RunStatus, TaskStatus
from tests import configset
from tests.recording import RecordingRemote, recording_remote
from tests.runs import T0, Harness, files_task
from tests.servers import SshServer


@pytest.fixture
def remote(sshd: SshServer) -> Iterator[RecordingRemote]:
    with recording_remote(sshd) as made:
        yield made


def tasks_of_one_server(
    remote: RecordingRemote, tmp_path: Path, count: int, *, server_id: int = 1, first: int = 1
) -> list[ResolvedTask]:
    return [
        files_task(
            remote.server, tmp_path / f"dest{i}", remote.source, task_id=i, server_id=server_id
        )
        for i in range(first, first + count)
    ]


def with_max_parallel_runs(task: ResolvedTask, limit: int) -> ResolvedTask:
    server = task.server.model_copy(update={"max_parallel_runs": limit})
    return task.model_copy(update={"server": server})


def wait_all(harness: Harness, tasks: list[ResolvedTask]) -> list[RunStatus]:
    statuses = []
    for task in tasks:
        harness.runner.wait(task.id, timeout=120)
        record = harness.state.runs.latest_run(task.id)
        assert record is not None
        statuses.append(record.status)
    return statuses


def test_scheduled_runs_of_one_server_run_one_at_a_time_and_all_of_them_run(
    remote: RecordingRemote, tmp_path: Path
) -> None:
    harness = Harness(tmp_path)
    harness.runner = harness.new_runner(max_workers=4)
    tasks = tasks_of_one_server(remote, tmp_path, 6)
    for task in tasks:  # all due in the same minute
        assert harness.runner.queue_scheduled(task, T0) is Admission.ACCEPTED

    assert wait_all(harness, tasks) == [RunStatus.SUCCESSFUL] * 6
    assert remote.started() == 6
    assert remote.most_at_once() == 1


def test_max_parallel_runs_2_lets_two_backups_of_the_server_run_at_once_and_no_more(
    remote: RecordingRemote, tmp_path: Path
) -> None:
    harness = Harness(tmp_path)
    harness.runner = harness.new_runner(max_workers=4)
    tasks = [with_max_parallel_runs(t, 2) for t in tasks_of_one_server(remote, tmp_path, 5)]
    remote.close_gate()
    for task in tasks:
        assert harness.runner.queue_scheduled(task, T0) is Admission.ACCEPTED
    remote.wait_until_started(2)
    time.sleep(1)  # room for a wrong third start to show up
    assert remote.started() == 2
    assert harness.runner.counts() == (2, 3)

    remote.open_gate()
    assert wait_all(harness, tasks) == [RunStatus.SUCCESSFUL] * 5
    assert remote.most_at_once() == 2


def test_another_server_is_not_held_up_by_runs_waiting_for_a_busy_one(
    remote: RecordingRemote, tmp_path: Path
) -> None:
    harness = Harness(tmp_path)
    harness.runner = harness.new_runner(max_workers=2)
    busy = tasks_of_one_server(remote, tmp_path, 3)
    (other,) = tasks_of_one_server(remote, tmp_path, 1, server_id=2, first=4)
    remote.close_gate()
    for task in [*busy, other]:
        harness.runner.queue_scheduled(task, T0)
    remote.wait_until_started(2)  # the first of server 1 and the one of server 2

    assert harness.runner.is_running(other.id)
    assert harness.state.runs.task_statuses([1, 2, 3]) == {
        1: TaskStatus.RUNNING,
        2: TaskStatus.QUEUED,
        3: TaskStatus.QUEUED,
    }
    remote.open_gate()
    assert wait_all(harness, [*busy, other]) == [RunStatus.SUCCESSFUL] * 4


def test_a_scheduled_run_waiting_for_its_server_is_queued_and_starts_when_it_really_starts(
    remote: RecordingRemote, tmp_path: Path
) -> None:
    harness = Harness(tmp_path)
    first, second = tasks_of_one_server(remote, tmp_path, 2)
    remote.close_gate()
    assert harness.runner.queue_scheduled(first, T0) is Admission.ACCEPTED
    remote.wait_until_started(1)
    assert harness.runner.queue_scheduled(second, T0) is Admission.ACCEPTED

    waiting = harness.state.runs.latest_run(second.id)
    assert waiting is not None
    assert waiting.status is RunStatus.QUEUED
    assert harness.state.runs.task_status(second.id) is TaskStatus.QUEUED
    assert not harness.runner.is_running(second.id)

    later = harness.clock.advance(timedelta(minutes=20))
    remote.open_gate()
    assert wait_all(harness, [first, second]) == [RunStatus.SUCCESSFUL] * 2
    ran = harness.state.runs.run(waiting.id)
    assert ran is not None
    assert ran.started_at == later
    assert harness.state.runs.latest_run(first.id).started_at == T0  # type: ignore[union-attr]


def test_a_run_queued_behind_the_worker_limit_is_queued_not_running(
    remote: RecordingRemote, tmp_path: Path
) -> None:
    harness = Harness(tmp_path)
    harness.runner = harness.new_runner(max_workers=1)
    (first,) = tasks_of_one_server(remote, tmp_path, 1)
    (second,) = tasks_of_one_server(remote, tmp_path, 1, server_id=2, first=2)
    remote.close_gate()
    assert harness.runner.request_run(first) is Admission.ACCEPTED
    remote.wait_until_started(1)
    assert harness.runner.request_run(second) is Admission.ACCEPTED

    waiting = harness.state.runs.latest_run(second.id)
    assert waiting is not None
    assert waiting.status is RunStatus.QUEUED
    assert harness.runner.counts() == (1, 1)
    later = harness.clock.advance(timedelta(minutes=5))
    remote.open_gate()
    assert wait_all(harness, [first, second]) == [RunStatus.SUCCESSFUL] * 2
    assert harness.state.runs.run(waiting.id).started_at == later  # type: ignore[union-attr]
    assert remote.most_at_once() == 1


def queued_behind_a_running_one(
    remote: RecordingRemote, tmp_path: Path, in_force: dict[int, ResolvedTask]
) -> tuple[Harness, ResolvedTask, ResolvedTask]:
    """Two tasks of one server, looked up in `in_force`: the first running at a closed gate,
    the second queued behind it."""
    harness = Harness(tmp_path)
    harness.runner = harness.new_runner(in_force=in_force.get)
    first, second = tasks_of_one_server(remote, tmp_path, 2)
    in_force.update({first.id: first, second.id: second})
    remote.close_gate()
    assert harness.runner.queue_scheduled(first, T0) is Admission.ACCEPTED
    remote.wait_until_started(1)
    assert harness.runner.queue_scheduled(second, T0) is Admission.ACCEPTED
    return harness, first, second


def test_a_queued_run_of_a_task_removed_meanwhile_is_cancelled_not_run(
    remote: RecordingRemote, tmp_path: Path
) -> None:
    in_force: dict[int, ResolvedTask] = {}
    harness, first, second = queued_behind_a_running_one(remote, tmp_path, in_force)
    del in_force[second.id]

    remote.open_gate()
    assert wait_all(harness, [first, second]) == [RunStatus.SUCCESSFUL, RunStatus.FAILED]
    record = harness.state.runs.latest_run(second.id)
    assert record is not None
    assert record.reason == (
        "cancelled: the task was removed from the repository while its run was queued"
    )
    assert remote.started() == 1


def test_a_queued_run_of_a_task_paused_meanwhile_is_cancelled_not_run(
    remote: RecordingRemote, tmp_path: Path
) -> None:
    in_force: dict[int, ResolvedTask] = {}
    harness, first, second = queued_behind_a_running_one(remote, tmp_path, in_force)
    paused = second.task.model_copy(update={"paused": True})
    in_force[second.id] = second.model_copy(update={"task": paused})

    remote.open_gate()
    assert wait_all(harness, [first, second]) == [RunStatus.SUCCESSFUL, RunStatus.FAILED]
    record = harness.state.runs.latest_run(second.id)
    assert record is not None
    assert record.reason == "cancelled: the task was paused while its run was queued"
    assert remote.started() == 1


def test_a_queued_run_of_a_task_edited_meanwhile_runs_the_edited_version(
    remote: RecordingRemote, tmp_path: Path
) -> None:
    in_force: dict[int, ResolvedTask] = {}
    harness, first, second = queued_behind_a_running_one(remote, tmp_path, in_force)
    edited = files_task(remote.server, tmp_path / "edited", remote.source, task_id=second.id)
    in_force[second.id] = edited

    remote.open_gate()
    assert wait_all(harness, [first, second]) == [RunStatus.SUCCESSFUL] * 2
    assert len(list((tmp_path / "edited").iterdir())) == 1
    assert not (tmp_path / "dest2").exists() or not any((tmp_path / "dest2").iterdir())


def test_a_manual_run_against_a_server_at_its_limit_is_refused_and_records_nothing(
    remote: RecordingRemote, tmp_path: Path
) -> None:
    harness = Harness(tmp_path)
    scheduled, manual = tasks_of_one_server(remote, tmp_path, 2)
    remote.close_gate()
    assert harness.runner.queue_scheduled(scheduled, T0) is Admission.ACCEPTED
    remote.wait_until_started(1)

    assert harness.runner.request_run(manual) is Admission.SERVER_BUSY
    assert harness.state.runs.latest_run(manual.id) is None
    remote.open_gate()
    wait_all(harness, [scheduled])
    assert harness.run(manual) is RunStatus.SUCCESSFUL


def test_a_server_allowing_two_runs_takes_a_second_manual_run_and_refuses_a_third(
    remote: RecordingRemote, tmp_path: Path
) -> None:
    harness = Harness(tmp_path)
    tasks = [with_max_parallel_runs(t, 2) for t in tasks_of_one_server(remote, tmp_path, 3)]
    remote.close_gate()
    assert harness.runner.request_run(tasks[0]) is Admission.ACCEPTED
    assert harness.runner.request_run(tasks[1]) is Admission.ACCEPTED
    assert harness.runner.request_run(tasks[2]) is Admission.SERVER_BUSY
    remote.wait_until_started(2)
    remote.open_gate()
    assert wait_all(harness, tasks[:2]) == [RunStatus.SUCCESSFUL] * 2
    assert remote.most_at_once() == 2


def test_a_paused_task_is_refused_the_same_way_for_both_triggers(
    remote: RecordingRemote, tmp_path: Path
) -> None:
    harness = Harness(tmp_path)
    (task,) = tasks_of_one_server(remote, tmp_path, 1)
    paused = task.model_copy(update={"task": task.task.model_copy(update={"paused": True})})

    assert harness.runner.request_run(paused) is Admission.PAUSED
    assert harness.runner.queue_scheduled(paused, T0) is Admission.PAUSED
    assert harness.state.runs.latest_run(task.id) is None
    assert remote.started() == 0


def test_closing_the_runner_ends_queued_runs_as_never_started(
    remote: RecordingRemote, tmp_path: Path
) -> None:
    harness = Harness(tmp_path)
    first, second = tasks_of_one_server(remote, tmp_path, 2)
    remote.close_gate()
    harness.runner.queue_scheduled(first, T0)
    remote.wait_until_started(1)
    harness.runner.queue_scheduled(second, T0)

    remote.open_gate()
    asyncio.run(harness.runner.close())
    record = harness.state.runs.latest_run(second.id)
    assert record is not None
    assert record.status is RunStatus.FAILED
    assert record.reason == "cancelled: the daemon stopped before the run started"
    assert remote.started() == 1


def test_a_runner_that_stops_starting_refuses_runs_ends_queued_ones_and_lets_running_finish(
    remote: RecordingRemote, tmp_path: Path
) -> None:
    harness = Harness(tmp_path)
    first, second, third = tasks_of_one_server(remote, tmp_path, 3)
    remote.close_gate()
    harness.runner.queue_scheduled(first, T0)
    remote.wait_until_started(1)
    harness.runner.queue_scheduled(second, T0)

    assert harness.runner.stop_starting() == (1, 1)
    assert harness.runner.request_run(third) is Admission.STOPPING
    assert harness.runner.queue_scheduled(third, T0) is Admission.STOPPING
    remote.open_gate()
    assert harness.runner.wait_running(timeout=120) == 0
    asyncio.run(harness.runner.close())
    statuses = [harness.state.runs.latest_run(task.id) for task in (first, second, third)]
    assert [run.status if run else None for run in statuses] == [
        RunStatus.SUCCESSFUL,
        RunStatus.FAILED,
        None,
    ]
    assert remote.started() == 1


def test_waiting_for_running_runs_gives_up_after_its_timeout_and_counts_them(
    remote: RecordingRemote, tmp_path: Path
) -> None:
    harness = Harness(tmp_path)
    (task,) = tasks_of_one_server(remote, tmp_path, 1)
    remote.close_gate()
    harness.runner.queue_scheduled(task, T0)
    remote.wait_until_started(1)
    harness.runner.stop_starting()

    assert harness.runner.wait_running(timeout=0.2) == 1
    assert harness.runner.is_running(task.id)
    remote.open_gate()
    asyncio.run(harness.runner.close())


def test_an_interrupted_run_ends_failed_as_interrupted_with_nothing_left_in_its_destination(
    remote: RecordingRemote, tmp_path: Path
) -> None:
    harness = Harness(tmp_path)
    (task,) = tasks_of_one_server(remote, tmp_path, 1)
    remote.close_gate()
    harness.runner.queue_scheduled(task, T0)
    remote.wait_until_started(1)
    harness.runner.stop_starting()

    waiting = threading.Thread(target=harness.runner.wait_running, args=(600,))
    waiting.start()
    harness.runner.interrupt()
    waiting.join(timeout=60)  # far below its 600 s: the interruption woke it
    assert not waiting.is_alive()
    asyncio.run(harness.runner.close())
    record = harness.state.runs.latest_run(task.id)
    assert record is not None
    assert record.status is RunStatus.FAILED
    assert record.reason == INTERRUPTED_BY_STOP
    assert list((tmp_path / "dest1").iterdir()) == []
    remote.open_gate()


def test_recovery_ends_a_run_left_queued_as_never_started_and_removes_nothing(
    remote: RecordingRemote, tmp_path: Path
) -> None:
    harness = Harness(tmp_path)
    (task,) = tasks_of_one_server(remote, tmp_path, 1)
    dest = tmp_path / "dest1"
    dest.mkdir()
    (dest / "unrelated.partial").write_bytes(b"not this run's")
    run_id = harness.state.runs.queue_run(task.id, "schedule", T0)

    recovered = harness.new_runner().recover()

    assert [record.id for record in recovered] == [run_id]
    record = harness.state.runs.run(run_id)
    assert record is not None
    assert record.status is RunStatus.FAILED
    assert record.reason == NEVER_STARTED
    assert NEVER_STARTED in record.output
    assert [path.name for path in dest.iterdir()] == ["unrelated.partial"]
    assert harness.run(task) is RunStatus.SUCCESSFUL


@pytest.mark.parametrize("value", [0, -1, "x", 1.5, True])
def test_an_invalid_max_parallel_runs_is_a_config_error_naming_the_field(value: object) -> None:
    parsed = parse_file(
        "servers/one.yaml", configset.server(1, 1, max_parallel_runs=value).encode()
    )
    (error,) = parsed.errors
    assert error.field == "max_parallel_runs"
    assert error.render().startswith("servers/one.yaml:")


def test_max_parallel_runs_defaults_to_one() -> None:
    parsed = parse_file("servers/one.yaml", configset.server(1, 1).encode())
    assert parsed.errors == ()
    (server,) = parsed.objects
    assert isinstance(server, RemoteServer)
    assert server.max_parallel_runs == 1
