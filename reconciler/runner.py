"""Admission: which runs start, when, and on which thread; what one run does is
`reconciler.backup`'s.

Every run, scheduled or manual, is admitted here, once: a paused task is refused, a task never
runs twice at once (its reservation holds from admission until its run ends, however it ends),
and a server runs at most `max_parallel_runs` backups at once. An admitted run is recorded
`queued` and waits in one first-come queue until a worker (`max_workers` of them) and a slot of
its server are free; it occupies no worker while it waits, and it is recorded `running`, with its
start time, when it really starts. A manual run that finds its server's slots taken is refused
(`SERVER_BUSY`); a scheduled one waits its turn. Admission only records and queues, so it is safe
to call from the asyncio event loop (through a thread: recording waits for SQLite's lock).

Each run writes one line to the daemon's log when it starts and one when it ends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from reconciler.backup import BackupPipeline, RunResult
from reconciler.models import ResolvedTask
from reconciler.slotclaims import Behind, SlotClaims
from reconciler.state.claims import Claim, ClaimRefusal
from reconciler.state.errors import StateError
from reconciler.state.runs import RunInProgressError, RunRecord, Runs
from reconciler.types import Clock, RunKind, RunStatus

logger = logging.getLogger(__name__)

# Seconds between attempts to record the end of a run whose first attempt failed.
_FINISH_RETRY_WAITS = (0.5, 1.0, 2.0, 4.0, 8.0)
_NEVER_STARTED = "cancelled: the daemon stopped before the run started"
_REMOVED_WHILE_QUEUED = (
    "cancelled: the task was removed from the repository while its run was queued"
)
_PAUSED_WHILE_QUEUED = "cancelled: the task was paused while its run was queued"


class Admission(StrEnum):
    """What admission decided about a run."""

    ACCEPTED = "accepted"
    PAUSED = "paused"
    ALREADY_RUNNING = "already_running"
    SERVER_BUSY = "server_busy"
    STOPPING = "stopping"
    CLAIMED_ELSEWHERE = "claimed_elsewhere"
    BEHIND = "behind"

    @property
    def message(self) -> str:
        return _MESSAGES[self]


_MESSAGES = {
    Admission.ACCEPTED: "the run was queued",
    Admission.PAUSED: "the task is paused; resume it to run it",
    Admission.ALREADY_RUNNING: "the task is already running",
    Admission.SERVER_BUSY: "another task is running on the same remote server",
    Admission.STOPPING: "the daemon is shutting down; it starts no new runs",
    Admission.CLAIMED_ELSEWHERE: "another node of the cluster claimed this run",
    Admission.BEHIND: (
        "this node's applied revision is older than another node's: it runs nothing until it"
        " has caught up"
    ),
}
_LEASE_LOST = "interrupted: node {node} stopped renewing its claim (its lease expired)"
# How often a slot that found its server full across the cluster is claimed again.
_UNCLAIMED_RETRY_SECONDS = 1.0


class DrillCarrier(Protocol):
    """What carries out a restore drill (`reconciler.drill`), as the backup pipeline carries
    out a backup: it records the run's end and tells `recorded`."""

    def run(
        self,
        task: ResolvedTask,
        run_id: int,
        started: datetime,
        cancel: threading.Event,
        recorded: Callable[[RunResult], None],
    ) -> None: ...


@dataclass(eq=False)
class _Run:
    """An admitted run: queued until it is handed to a worker, then running until it ends."""

    task: ResolvedTask
    run_id: int
    trigger: str
    started: datetime | None  # None: recorded queued, its worker records it running
    kind: RunKind = RunKind.BACKUP
    claim: Claim | None = None  # in a cluster: the claim it runs under
    ended: Future[None] = field(default_factory=Future)

    @property
    def server_id(self) -> int:
        return self.task.server.id


@dataclass(eq=False)
class _Unclaimed:
    """A scheduled slot not claimed yet, in a cluster: this node had no free worker for it, or
    its server had no room left in the cluster. Claimed again until it is granted, another node
    takes it, or it is older than the catch-up deadline."""

    task: ResolvedTask
    slot: datetime
    kind: RunKind


class Runner:
    """`in_force` gives a task as the applied revision has it now (None: no longer there); a
    queued run is looked up again when a worker could take it, so a run that waited behind its
    server runs the task as the repository says then: removed or paused meanwhile, it is
    cancelled; edited, it runs the new version. Without it a queued run keeps its snapshot."""

    def __init__(
        self,
        pipeline: BackupPipeline,
        *,
        runs: Runs,
        clock: Clock,
        max_workers: int = 4,
        in_force: Callable[[int], ResolvedTask | None] | None = None,
        drills: DrillCarrier | None = None,
        slots: SlotClaims | None = None,
        catch_up_deadline: timedelta = timedelta(hours=12),
    ) -> None:
        """`drills` carries out restore drills (`queue_drill`); without it none is admitted.
        `slots`: in a cluster, every run is claimed there first (see `reconciler.slotclaims`);
        a slot taken over from a dead node runs again only within `catch_up_deadline`."""
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self._pipeline = pipeline
        self._drills = drills
        self._runs = runs
        self._clock = clock
        self._max_workers = max_workers
        self._in_force = in_force
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="backup")
        self._lock = threading.Lock()  # guards the fields below
        self._admitted: dict[int, _Run] = {}  # by task id, queued or running
        self._waiting: deque[_Run] = deque()  # admitted, not started: in admission order
        self._running: set[_Run] = set()
        self._ends: dict[int, Future[None]] = {}  # by task id: its latest run's end
        self._closing = False  # admits and starts nothing more (`stop_starting`)
        self._idle = threading.Condition(self._lock)  # notified whenever a run lets go
        self._stop = threading.Event()  # cancels the running runs (`interrupt`)
        self._interrupted: list[int] = []  # run ids that were running when `interrupt` came
        self._slots = slots
        self._catch_up_deadline = catch_up_deadline
        self._unclaimed: list[_Unclaimed] = []  # waiting for room on their server, unclaimed
        self._keeper: threading.Thread | None = None

    # Admission

    def request_run(self, task: ResolvedTask, trigger: str = "manual") -> Admission:
        """Admit a manual run: refused while the task is paused or running, or while its server
        runs (or has queued) as many backups as it allows."""
        return self._admit(task, trigger, wait_for_server=False)

    def queue_scheduled(self, task: ResolvedTask, slot: datetime) -> Admission:
        """Admit the run of a scheduled `slot`; it waits for its server if need be. A refusal
        (paused, still running) skips the slot and is logged."""
        admission = self._admit(task, "schedule", wait_for_server=True, slot=slot)
        if admission is Admission.CLAIMED_ELSEWHERE:
            logger.debug("task %d: its run at %s is another node's", task.id, slot)
        elif admission is Admission.PAUSED:
            logger.info("task %d is paused: scheduled run at %s skipped", task.id, slot)
        elif admission is not Admission.ACCEPTED:
            logger.warning(
                "task %d: scheduled run at %s skipped: %s", task.id, slot, admission.message
            )
        return admission

    def queue_drill(self, task: ResolvedTask, slot: datetime) -> Admission:
        """Admit the restore drill of a scheduled `slot`, as a scheduled backup is admitted: it
        never runs beside the task's backup (a drill due while its backup runs is skipped, and
        logged), and it waits for its server's slots."""
        if self._drills is None:
            raise ValueError("this runner was built without a drill pipeline")
        admission = self._admit(
            task, "schedule", wait_for_server=True, kind=RunKind.VERIFY, slot=slot
        )
        if admission is Admission.CLAIMED_ELSEWHERE:
            logger.debug("task %d: its restore drill at %s is another node's", task.id, slot)
        elif admission is not Admission.ACCEPTED:
            logger.warning(
                "task %d: restore drill at %s skipped: %s", task.id, slot, admission.message
            )
        return admission

    def _admit(
        self,
        task: ResolvedTask,
        trigger: str,
        *,
        wait_for_server: bool,
        kind: RunKind = RunKind.BACKUP,
        slot: datetime | None = None,
    ) -> Admission:
        """`slot`: the scheduled fire time the run is for (None: a manual run, claimed by the
        time of its request)."""
        with self._lock:
            refusal = self._refusal(task, wait_for_server)
            if refusal is not None:
                return refusal
            claim: Claim | None = None
            if self._slots is not None:
                if slot is not None and not self._can_start(task):
                    # Claimed only once it can start here, so that a node with free workers
                    # takes it meanwhile: nodes share the work rather than one queueing it all.
                    self._pend(task, slot, kind)
                    return Admission.ACCEPTED
                claimed = self._slots.claim(task, self._clock.now() if slot is None else slot)
                if not isinstance(claimed, Claim):
                    return self._not_claimed(task, slot, kind, claimed, wait_for_server)
                claim = claimed
            return self._record(task, trigger, kind, claim)

    def _refusal(self, task: ResolvedTask, wait_for_server: bool) -> Admission | None:
        if self._closing:
            return Admission.STOPPING
        if task.task.paused:
            return Admission.PAUSED
        if task.id in self._admitted:
            return Admission.ALREADY_RUNNING
        if not wait_for_server and self._server_load(task.server.id) >= (
            task.server.max_parallel_runs
        ):
            return Admission.SERVER_BUSY
        return None

    def _not_claimed(
        self,
        task: ResolvedTask,
        slot: datetime | None,
        kind: RunKind,
        claimed: ClaimRefusal | Behind,
        wait_for_server: bool,
    ) -> Admission:
        if claimed is Behind.BEHIND:
            return Admission.BEHIND
        if claimed is ClaimRefusal.TAKEN:
            return Admission.CLAIMED_ELSEWHERE
        if claimed is ClaimRefusal.TASK_BUSY:
            return Admission.ALREADY_RUNNING
        if not wait_for_server or slot is None:
            return Admission.SERVER_BUSY
        self._pend(task, slot, kind)
        return Admission.ACCEPTED

    def _pend(self, task: ResolvedTask, slot: datetime, kind: RunKind) -> None:
        if not any(pending.task.id == task.id for pending in self._unclaimed):
            self._unclaimed.append(_Unclaimed(task, slot, kind))

    def _record(
        self, task: ResolvedTask, trigger: str, kind: RunKind, claim: Claim | None
    ) -> Admission:
        """Record the admitted run and start or queue it; under the lock."""
        # A run that can start now is recorded running at once, so it is never seen queued.
        now = self._clock.now()
        starts_now = self._can_start(task)
        record = self._runs.start_run if starts_now else self._runs.queue_run
        try:
            run_id = record(task.id, trigger, now, kind)
        except RunInProgressError:  # in another process sharing the state store
            if claim is not None and self._slots is not None:
                self._slots.release(claim)
            return Admission.ALREADY_RUNNING
        if claim is not None and self._slots is not None:
            self._slots.attach(claim, run_id)
        run = _Run(task, run_id, trigger, now if starts_now else None, kind, claim)
        self._admitted[task.id] = run
        self._ends[task.id] = run.ended
        if starts_now:
            self._start(run)
        else:
            self._waiting.append(run)
        return Admission.ACCEPTED

    def _server_load(self, server_id: int) -> int:
        return sum(1 for run in self._admitted.values() if run.server_id == server_id)

    def _can_start(self, task: ResolvedTask) -> bool:
        """Whether a worker and a slot of the task's server are free (admitted runs that wait
        are all held by one or the other, so none is passed over)."""
        on_server = sum(1 for run in self._running if run.server_id == task.server.id)
        return len(self._running) < self._max_workers and on_server < task.server.max_parallel_runs

    def _start(self, run: _Run) -> None:
        self._running.add(run)
        self._pool.submit(self._work, run)

    def _start_what_can_start(self) -> list[tuple[_Run, str]]:
        """Hand waiting runs to free workers, first come first served among those whose server
        has a free slot (a run waiting for a busy server holds up no other server's runs).
        Returns the waiting runs withdrawn because their task was removed or paused meanwhile,
        with why, for the caller to end once it has let go of the lock."""
        withdrawn: list[tuple[_Run, str]] = []
        if self._closing:
            return withdrawn
        for run in list(self._waiting):
            if len(self._running) >= self._max_workers:
                break
            reason = self._revise(run)
            if reason is not None:
                self._waiting.remove(run)
                withdrawn.append((run, reason))
            elif self._can_start(run.task):
                self._waiting.remove(run)
                self._start(run)
        return withdrawn

    def _revise(self, run: _Run) -> str | None:
        """Bring a waiting run's task up to the version in force; why it may not run, if so."""
        if self._in_force is None:
            return None
        task = self._in_force(run.task.id)
        if task is None:
            return _REMOVED_WHILE_QUEUED
        if task.task.paused:
            return _PAUSED_WHILE_QUEUED
        run.task = task
        return None

    def is_running(self, task_id: int) -> bool:
        """Whether the task's run is running now (not waiting in the queue)."""
        with self._lock:
            run = self._admitted.get(task_id)
            return run is not None and run in self._running

    def counts(self) -> tuple[int, int]:
        """How many runs are running now, and how many wait in the queue."""
        with self._lock:
            return len(self._running), len(self._waiting)

    def wait(self, task_id: int, timeout: float | None = None) -> None:
        """Block until the task's current run (if any), queued or running, has ended."""
        with self._lock:
            ended = self._ends.get(task_id)
        if ended is not None:
            ended.result(timeout=timeout)

    # Claims (in a cluster)

    def _claim_unclaimed(self) -> None:
        """Claim again the slots that waited for a worker or for their server; drop those
        another node took, and those older than the catch-up deadline."""
        with self._lock:
            pending, self._unclaimed = self._unclaimed, []
        oldest = self._clock.now() - self._catch_up_deadline
        for unclaimed in pending:
            if unclaimed.slot < oldest:
                logger.warning(
                    "task %d: run at %s skipped: its server had no room in the cluster until"
                    " the catch-up deadline",
                    unclaimed.task.id,
                    unclaimed.slot,
                )
                continue
            task = self._in_force(unclaimed.task.id) if self._in_force else unclaimed.task
            if task is None:
                continue
            self._admit(
                task, "schedule", wait_for_server=True, kind=unclaimed.kind, slot=unclaimed.slot
            )

    def cluster_node(self) -> SlotClaims | None:
        """This node's claims, in a cluster; None for a daemon alone."""
        return self._slots

    def unclaimed(self) -> int:
        """How many scheduled slots wait for room on their server in the cluster."""
        with self._lock:
            return len(self._unclaimed)

    def start_keeping_claims(self) -> None:
        """Start the thread that renews this node's claims and heartbeat, claims again the
        slots waiting for room, and takes over the slots of dead nodes (`reconciler.slotclaims`);
        nothing without a cluster."""
        if self._slots is None or self._keeper is not None:
            return
        self._keeper = threading.Thread(target=self._keep_claims, name="claims", daemon=True)
        self._keeper.start()

    def _keep_claims(self) -> None:
        assert self._slots is not None
        renew_every = self._slots.lease.total_seconds() / 3
        renewed = float("-inf")
        while not self._stop.wait(_UNCLAIMED_RETRY_SECONDS):
            try:
                if time.monotonic() - renewed >= renew_every:
                    renewed = time.monotonic()
                    for lost in self._slots.keep_alive():
                        logger.error(
                            "task %d: the claim of its run at %s was lost (the state store was"
                            " out of reach longer than the lease): another node may run it",
                            lost.task_id,
                            lost.slot,
                        )
                    self._take_over_dead_claims()
                self._claim_unclaimed()
            except Exception:
                logger.exception("cannot keep this node's claims")

    def _take_over_dead_claims(self) -> None:
        assert self._slots is not None
        for expired in self._slots.expired_elsewhere():
            task = self._in_force(expired.task_id) if self._in_force else None
            taken = self._slots.take_over(task, expired)
            if taken is None:
                continue
            dead = None if expired.run_id is None else self._runs.run(expired.run_id)
            if dead is not None and dead.finished_at is None:
                reason = _LEASE_LOST.format(node=expired.node_id)
                try:
                    self._runs.finish_run(
                        dead.id, RunStatus.FAILED, self._clock.now(), reason=reason
                    )
                    self._pipeline.discard_partial(dead)
                except StateError:
                    pass  # it ended meanwhile
            if task is None:  # removed meanwhile: its dead run is ended, nothing runs again
                self._slots.release(taken)
                continue
            kind = RunKind.BACKUP if dead is None else dead.kind
            too_old = expired.slot < self._clock.now() - self._catch_up_deadline
            logger.warning(
                "task %d: node %s died running its %s slot: %s",
                task.id,
                expired.node_id,
                expired.slot,
                "too old to run again" if too_old else "running it once more here",
            )
            with self._lock:
                refusal = None if not too_old else Admission.STOPPING
                refusal = refusal or self._refusal(task, wait_for_server=True)
                if refusal is None:
                    trigger = "schedule" if dead is None else dead.trigger
                    self._record(task, trigger, kind, taken)
                    continue
            self._slots.release(taken)

    # Start and stop

    def recover(self) -> list[RunRecord]:
        """End the runs a crash left unfinished: a running one failed, its partial file removed;
        a queued one (it never started, so it wrote nothing) failed as never started.

        Call once at start, before any run is admitted. In a cluster the other nodes' runs are
        theirs: a dead node's run is ended by the node that takes its slot over, once its lease
        expired (`start_keeping_claims`).
        """
        if self._slots is not None:
            return []
        interrupted = self._runs.recover_interrupted(self._clock.now())
        for record in interrupted:
            self._pipeline.discard_partial(record)
        return interrupted

    def stop_starting(self) -> tuple[int, int]:
        """Refuse new runs (`Admission.STOPPING`) and end the queued ones as never started; the
        running ones go on. Returns how many are running and how many queued runs were ended.
        Blocking (it records the ends)."""
        with self._lock:
            self._closing = True
            never_started = list(self._waiting)
            self._waiting.clear()
        for run in never_started:
            self._withdraw(run, _NEVER_STARTED)
        return self.counts()[0], len(never_started)

    def wait_running(self, timeout: float) -> int:
        """Block until no run is running, `interrupt` is called, or `timeout` seconds have
        passed; returns how many runs are still running."""
        with self._idle:
            self._idle.wait_for(lambda: not self._running or self._stop.is_set(), timeout)
            return len(self._running)

    def interrupt(self) -> None:
        """Cancel the running runs: each ends failed as interrupted, its partial file removed
        (`close` waits for them)."""
        with self._idle:
            if not self._stop.is_set():
                self._interrupted = [run.run_id for run in self._running]
            self._stop.set()
            self._idle.notify_all()

    async def close(self) -> None:
        """Refuse new runs, end queued ones as never started, cancel running ones (their partial
        files are removed), and wait for them."""
        await asyncio.to_thread(self.stop_starting)
        self.interrupt()
        await asyncio.to_thread(self._pool.shutdown, wait=True)
        if self._keeper is not None:
            await asyncio.to_thread(self._keeper.join)
        await asyncio.to_thread(self._discard_interrupted_partials)

    def _discard_interrupted_partials(self) -> None:
        """A cancelled run removes its partial file itself; this catches what that missed (a
        destination that failed as the run was cancelled), as start-up recovery would."""
        for run_id in self._interrupted:
            try:
                record = self._runs.run(run_id)
                if record is not None and record.status is RunStatus.FAILED:
                    self._pipeline.discard_partial(record)
            except Exception:
                logger.exception("run %d: cannot check for its partial backup", run_id)

    # One run

    def _work(self, run: _Run) -> None:
        """A worker's job: the run, then its release, whatever the run raised."""
        task = run.task
        try:
            started = run.started
            if started is None:
                started = self._clock.now()
                self._runs.begin_run(run.run_id, started)
            what = run.trigger if run.kind is RunKind.BACKUP else f"restore drill, {run.trigger}"
            logger.info("task %d run %d started (%s)", task.id, run.run_id, what)

            def log_end(result: RunResult) -> None:
                seconds = result.duration.total_seconds()
                ended = (
                    f"task {task.id} run {run.run_id} {result.status.value} in {seconds:.1f} s,"
                    f" {result.size or 0} bytes"
                )
                level = logging.INFO if result.status is RunStatus.SUCCESSFUL else logging.WARNING
                logger.log(level, "%s", f"{ended}: {result.reason}" if result.reason else ended)

            carrier = self._pipeline if run.kind is RunKind.BACKUP else self._drills
            assert carrier is not None  # `queue_drill` admits none without it
            carrier.run(task, run.run_id, started, self._stop, log_end)
        except Exception:
            logger.exception("task %d run %d: unexpected error", task.id, run.run_id)
            self._end_unfinished(task.id, run.run_id)
        finally:
            self._release(run)

    def _release(self, run: _Run) -> None:
        if run.claim is not None and self._slots is not None:
            try:
                self._slots.release(run.claim)
            except Exception:  # its lease then ends on its own: the slot is never run again
                logger.exception(
                    "task %d run %d: cannot release its claim", run.task.id, run.run_id
                )
        with self._lock:
            if self._admitted.get(run.task.id) is run:
                del self._admitted[run.task.id]
            self._running.discard(run)
            withdrawn = self._start_what_can_start()
            self._idle.notify_all()
        run.ended.set_result(None)
        for other, reason in withdrawn:
            self._withdraw(other, reason)
        if self._slots is not None:
            self._claim_unclaimed()

    def _withdraw(self, run: _Run, reason: str) -> None:
        """End a run that never started, and let go of its reservation."""
        try:
            self._runs.finish_run(run.run_id, RunStatus.FAILED, self._clock.now(), reason=reason)
            logger.info("task %d run %d %s", run.task.id, run.run_id, reason)
        except Exception:
            logger.exception("task %d run %d: cannot record its end", run.task.id, run.run_id)
        finally:
            self._release(run)

    def _end_unfinished(self, task_id: int, run_id: int) -> None:
        """A run whose end could not be recorded (a busy or failing state store) would keep its
        task "running" in every process until a restart: record it failed, retrying a while."""
        for wait in (*_FINISH_RETRY_WAITS, None):
            try:
                self._runs.finish_run(
                    run_id,
                    RunStatus.FAILED,
                    self._clock.now(),
                    reason="the run's end could not be recorded (the daemon's log says why)",
                )
            except StateError:
                return  # already finished: its own record stands
            except Exception:
                if wait is None:
                    logger.exception("task %d run %d: cannot record its end", task_id, run_id)
                    return
                self._stop.wait(wait)
            else:
                return
