"""The daemon's `restic prune` of each restic repository its tasks use, on the destination's
`prune.schedule` (weekly, Sunday 04:00 UTC, by default).

A run's rotation only forgets snapshots (`restic forget`); the data they alone held stays in the
repository until a prune, which rewrites packs and can take long, so it has a schedule of its
own. It holds the repository's exclusive lock (`repolocks`): the daemon's backups of that
repository wait for it, and it waits for them.

Which destinations and when is `PruneSchedule` (pure bookkeeping, time passed in); `ResticPrunes`
is its loop, sleeping until the next prune is due and running each on a thread of its own. A
missed prune (the daemon was down) is not caught up: the next one is at most a schedule away.
In a cluster every node keeps the schedule; restic's own exclusive lock lets one of them prune,
and a node that finds the repository locked after restic's retries skips that prune.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType

from reconciler.cron import NoFireTime, next_fire
from reconciler.destinations.restic import ResticError, ResticStore
from reconciler.models import ResolvedTask, ResticDestination, Schedule, SecretRef
from reconciler.repolocks import RepositoryLocks
from reconciler.resticcommands import ResticProblem
from reconciler.types import Clock

logger = logging.getLogger("reconciler.resticprune")


class PruneResult(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"  # the repository is not there yet, or another process holds its lock
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PruneRecord:
    """How a destination's last prune went."""

    result: PruneResult
    finished_at: datetime
    message: str


def restic_destinations(tasks: Iterable[ResolvedTask]) -> dict[int, ResticDestination]:
    """The restic destinations the tasks back up to (a destination no task uses is not pruned:
    the daemon does not create or touch a repository nothing writes to)."""
    return {
        task.destination.id: task.destination
        for task in tasks
        if isinstance(task.destination, ResticDestination)
    }


class PruneSchedule:
    """Each restic destination's next prune. `due(destinations, now)` follows the destinations in
    force (an unchanged schedule keeps its next time; a new or changed one starts after `now`)
    and returns those whose time has come, each moved on to its next time."""

    def __init__(self) -> None:
        self._next: dict[int, tuple[Schedule, datetime | None]] = {}

    def due(
        self, destinations: Mapping[int, ResticDestination], now: datetime
    ) -> list[ResticDestination]:
        due = []
        for gone in self._next.keys() - destinations.keys():
            del self._next[gone]
        for destination_id, destination in sorted(destinations.items()):
            if destination.prune is None:
                self._next.pop(destination_id, None)
                continue
            schedule = destination.prune.schedule
            known = self._next.get(destination_id)
            if known is None or known[0] != schedule:
                self._next[destination_id] = (schedule, _after(schedule, now))
                continue
            at = known[1]
            if at is not None and at <= now:
                due.append(destination)
                self._next[destination_id] = (schedule, _after(schedule, now))
        return due

    def next_at(self, destination_id: int) -> datetime | None:
        known = self._next.get(destination_id)
        return None if known is None else known[1]

    def soonest(self) -> datetime | None:
        times = [at for _, at in self._next.values() if at is not None]
        return min(times) if times else None


def _after(schedule: Schedule, now: datetime) -> datetime | None:
    try:
        return next_fire(schedule, now)
    except NoFireTime:
        return None


def prune_repository(
    destination: ResticDestination,
    resolve_secret: Callable[[SecretRef], str],
    locks: RepositoryLocks,
    cancel: threading.Event,
) -> tuple[PruneResult, str]:
    """Prune one repository: how it went, and what restic said last (one line)."""
    if cancel.is_set():
        return PruneResult.SKIPPED, "stopped with the daemon"
    store = ResticStore(destination, resolve_secret, locks=locks)
    try:
        report = store.prune(cancel=cancel)
    except ResticError as exc:
        if cancel.is_set():
            return PruneResult.SKIPPED, "stopped with the daemon"
        if exc.problem in (ResticProblem.NO_REPOSITORY, ResticProblem.LOCKED):
            return PruneResult.SKIPPED, str(exc)
        return PruneResult.FAILED, str(exc)
    except Exception as exc:
        return PruneResult.FAILED, str(exc) or type(exc).__name__
    lines = [line.strip() for line in report.splitlines() if line.strip()]
    return PruneResult.DONE, lines[-1] if lines else "restic prune done"


Prune = Callable[[ResticDestination, threading.Event], tuple[PruneResult, str]]
"""Prune one repository (`prune_repository` with the daemon's secrets and locks)."""


class ResticPrunes:
    """The prune loop: `run()` until `stop()`; `records` says how each destination's last prune
    went (for /metrics)."""

    def __init__(
        self,
        *,
        clock: Clock,
        tasks: Callable[[], Iterable[ResolvedTask]],
        prune: Prune,
        max_sleep: timedelta = timedelta(seconds=60),
    ) -> None:
        """`tasks` are those in force, read at each wake-up (so a commit that adds a restic
        destination is followed within `max_sleep`)."""
        self._clock = clock
        self._tasks = tasks
        self._prune = prune
        self._max_sleep = max_sleep
        self._schedule = PruneSchedule()
        self._records: dict[int, PruneRecord] = {}
        self._running: set[int] = set()
        self._guard = threading.Lock()
        self._stopped = asyncio.Event()
        self._cancel = threading.Event()
        self._threads: set[asyncio.Task[None]] = set()
        # Threads of their own: a prune waiting hours for a repository's backups must not take
        # one of the event loop's default threads, which reconciles and API writes need.
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="restic-prune")

    @property
    def records(self) -> Mapping[int, PruneRecord]:
        with self._guard:
            return MappingProxyType(dict(self._records))

    def next_at(self, destination_id: int) -> datetime | None:
        return self._schedule.next_at(destination_id)

    async def run(self) -> None:
        while not self._stopped.is_set():
            now = self._clock.now()
            for destination in self._schedule.due(restic_destinations(self._tasks()), now):
                if destination.id in self._running:
                    logger.warning(
                        "restic prune of %s: the previous one still runs, this one is skipped",
                        destination.label,
                    )
                    continue
                self._running.add(destination.id)
                started = asyncio.create_task(self._carry_out(destination))
                self._threads.add(started)
                started.add_done_callback(self._threads.discard)
            soonest = self._schedule.soonest()
            sleep = self._max_sleep.total_seconds()
            if soonest is not None:
                sleep = max(0.0, min(sleep, (soonest - self._clock.now()).total_seconds()))
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), timeout=sleep)

    async def _carry_out(self, destination: ResticDestination) -> None:
        logger.info("restic prune of %s (%s)", destination.label, destination.repository)
        loop = asyncio.get_running_loop()
        try:
            result, message = await loop.run_in_executor(
                self._executor, self._prune, destination, self._cancel
            )
        except Exception as exc:  # the loop goes on: the next prune is a schedule away
            result, message = PruneResult.FAILED, str(exc) or type(exc).__name__
        finally:
            self._running.discard(destination.id)
        record = PruneRecord(result, self._clock.now(), message)
        with self._guard:
            self._records[destination.id] = record
        level = logging.WARNING if result == PruneResult.FAILED else logging.INFO
        logger.log(level, "restic prune of %s: %s: %s", destination.label, result, message)

    def stop(self) -> None:
        """Start no more prunes, and stop one under way (restic's prune is safe to stop: what it
        had not finished is done by the next)."""
        self._stopped.set()
        self._cancel.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
