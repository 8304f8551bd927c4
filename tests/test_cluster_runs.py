"""Several nodes' runners on one shared state store (each backend), with real backups over the
test sshd: a slot runs on one node only, a server's limit holds across nodes, a dead node's slot
runs once more elsewhere, and a node behind the others claims nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from reconciler.backup import BackupPipeline
from reconciler.models import ResolvedTask
from reconciler.runner import Admission, Runner
from reconciler.secrets import Secrets
from reconciler.slotclaims import SlotClaims, server_key
from reconciler.state import StateStore
from reconciler.state.claims import Claim, SlotKey
from reconciler.state.runs import RunRecord
from reconciler.types import RunStatus
from tests.clock import FakeClock
from tests.runs import T0, files_task
from tests.servers import SshServer
from tests.stores import OpenStore

REVISION_TIME = T0 - timedelta(days=1)
WAIT_SECONDS = 60.0


@contextmanager
def node(
    store: StateStore,
    name: str,
    clock: FakeClock,
    tasks: dict[int, ResolvedTask],
    tmp_path: Path,
    revision_time: datetime = REVISION_TIME,
) -> Iterator[Runner]:
    """One node: its own runner and claims on the shared `store`, its claims kept."""
    slots = SlotClaims(
        store.claims,
        store.nodes,
        node_id=name,
        clock=clock,
        applied=lambda: ("abc123", revision_time),
    )
    pipeline = BackupPipeline(
        runs=store.runs, secrets=Secrets(tmp_path / "secrets.json", {}), clock=clock
    )
    runner = Runner(
        pipeline, runs=store.runs, clock=clock, max_workers=2, in_force=tasks.get, slots=slots
    )
    slots.keep_alive()
    runner.start_keeping_claims()
    try:
        yield runner
    finally:
        asyncio.run(runner.close())


def task_on(sshd: SshServer, tmp_path: Path, task_id: int, **server: object) -> ResolvedTask:
    source = tmp_path / "source"
    source.mkdir(exist_ok=True)
    (source / "a.txt").write_text("bytes to store\n" * 100)
    task = files_task(sshd, tmp_path / "backups", source, task_id=task_id)
    return task.model_copy(update={"server": task.server.model_copy(update=server)})


def runs_of(store: StateStore, task_id: int) -> list[RunRecord]:
    return store.runs.page(task_id, 0, 100)[0]


def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT_SECONDS} s: {what}")
        time.sleep(0.05)


def finished(store: StateStore, task_id: int, count: int) -> Callable[[], bool]:
    return lambda: sum(run.finished_at is not None for run in runs_of(store, task_id)) >= count


@pytest.mark.servers
def test_a_slot_fired_on_three_nodes_runs_on_one(
    open_store: OpenStore, sshd: SshServer, tmp_path: Path
) -> None:
    task = task_on(sshd, tmp_path, 1)
    clock = FakeClock(T0)
    with ExitStack() as stack:
        nodes = [
            stack.enter_context(node(open_store(), name, clock, {1: task}, tmp_path))
            for name in ("a", "b", "c")
        ]
        admissions = [runner.queue_scheduled(task, T0) for runner in nodes]
        store = open_store()
        until(finished(store, 1, 1), "the run ended")

    assert sorted(admissions) == sorted(
        [Admission.ACCEPTED, Admission.CLAIMED_ELSEWHERE, Admission.CLAIMED_ELSEWHERE]
    )
    (run,) = runs_of(store, 1)
    assert run.status is RunStatus.SUCCESSFUL, run.output


@pytest.mark.servers
def test_a_manual_run_on_one_node_is_refused_while_another_runs_the_task(
    open_store: OpenStore, sshd: SshServer, tmp_path: Path
) -> None:
    task = task_on(sshd, tmp_path, 1)
    store = open_store()
    earlier = T0 - timedelta(minutes=1)  # a scheduled slot of node b, running
    store.claims.claim(SlotKey(1, earlier), server_key(task), 1, "b", T0, T0 + timedelta(minutes=5))
    with node(open_store(), "a", FakeClock(T0), {1: task}, tmp_path) as a:
        assert a.request_run(task) is Admission.ALREADY_RUNNING
    assert runs_of(store, 1) == []


@pytest.mark.servers
def test_a_servers_limit_holds_across_nodes_and_the_waiting_slot_runs_after(
    open_store: OpenStore, sshd: SshServer, tmp_path: Path
) -> None:
    first, second = task_on(sshd, tmp_path, 1), task_on(sshd, tmp_path, 2)
    tasks = {1: first, 2: second}
    store = open_store()
    clock = FakeClock(T0)
    with (
        node(open_store(), "a", clock, tasks, tmp_path) as a,
        node(open_store(), "b", clock, tasks, tmp_path) as b,
    ):
        assert a.queue_scheduled(first, T0) is Admission.ACCEPTED
        assert b.queue_scheduled(second, T0) is Admission.ACCEPTED  # waits for the server
        until(lambda: finished(store, 1, 1)() and finished(store, 2, 1)(), "both runs ended")

    (one,), (two,) = runs_of(store, 1), runs_of(store, 2)
    assert one.finished_at is not None
    assert one.finished_at <= two.started_at, "server 1 allows one run at a time"
    assert (one.status, two.status) == (RunStatus.SUCCESSFUL, RunStatus.SUCCESSFUL)


@pytest.mark.servers
def test_a_dead_nodes_slot_is_interrupted_and_runs_once_on_another_node(
    open_store: OpenStore, sshd: SshServer, tmp_path: Path
) -> None:
    task = task_on(sshd, tmp_path, 1)
    store = open_store()
    lease = timedelta(seconds=60)
    # Node "dead" claimed the slot and started its run, then stopped renewing: killed.
    dead = store.claims.claim(SlotKey(1, T0), server_key(task), 1, "dead", T0, T0 + lease)
    assert isinstance(dead, Claim)
    dead_run = store.runs.start_run(1, "schedule", T0)
    store.claims.attach_run(dead.key, "dead", dead_run)
    clock = FakeClock(T0 + timedelta(seconds=30))
    with (
        node(open_store(), "b", clock, {1: task}, tmp_path),
        node(open_store(), "c", clock, {1: task}, tmp_path),
    ):
        time.sleep(1.5)  # the lease still holds: nobody takes the slot over
        assert [run.id for run in runs_of(store, 1)] == [dead_run]
        clock.advance(lease)
        until(finished(store, 1, 2), "the slot ran again")
        time.sleep(2.5)  # room for a second take-over, which must not come

    runs = sorted(runs_of(store, 1), key=lambda run: run.id)
    assert [run.status for run in runs] == [RunStatus.FAILED, RunStatus.SUCCESSFUL]
    assert runs[0].reason == "interrupted: node dead stopped renewing its claim (its lease expired)"
    live = store.claims.live_claims(clock.now())
    assert live == []


@pytest.mark.servers
def test_a_node_behind_the_others_claims_nothing(
    open_store: OpenStore, sshd: SshServer, tmp_path: Path
) -> None:
    task = task_on(sshd, tmp_path, 1)
    store = open_store()
    store.nodes.heartbeat("ahead", "def456", REVISION_TIME + timedelta(hours=1), T0, T0)
    with node(open_store(), "behind", FakeClock(T0), {1: task}, tmp_path) as behind:
        admission = behind.queue_scheduled(task, T0)

    assert admission is Admission.BEHIND
    assert runs_of(store, 1) == []
    assert store.claims.live_claims(T0) == []


@pytest.mark.servers
def test_a_dead_nodes_run_of_a_removed_task_is_ended_and_not_run_again(
    open_store: OpenStore, sshd: SshServer, tmp_path: Path
) -> None:
    removed = task_on(sshd, tmp_path, 9)
    store = open_store()
    dead = store.claims.claim(
        SlotKey(9, T0), server_key(removed), 1, "dead", T0, T0 + timedelta(seconds=60)
    )
    assert isinstance(dead, Claim)
    dead_run = store.runs.start_run(9, "schedule", T0)
    store.claims.attach_run(dead.key, "dead", dead_run)
    clock = FakeClock(T0 + timedelta(minutes=5))
    with node(open_store(), "b", clock, {}, tmp_path):
        until(finished(store, 9, 1), "the dead run was ended")
        time.sleep(1.5)

    (run,) = runs_of(store, 9)
    assert run.status is RunStatus.FAILED
    assert run.reason == "interrupted: node dead stopped renewing its claim (its lease expired)"
