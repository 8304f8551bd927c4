"""The one owner of time in the daemon: which task is due when, and waking up for it.

One entry per active task; the next fire times sit in a heap keyed by (fire time, task id).
Replacing or removing an entry does not search the heap: the old heap item just stops matching
`_next` and is dropped when it surfaces (lazy invalidation), so upsert, remove and pop are
O(log n). The heap is rebuilt when stale items outnumber live ones, which bounds its size.

`run()` sleeps until the earliest fire time or a `wake()`, never polling on a fixed tick; the
sleep is capped so a wall-clock jump (suspend, NTP step) is noticed within `max_sleep`.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from types import MappingProxyType

from reconciler.cron import NoFireTime, next_fire, previous_fire
from reconciler.models import ResolvedTask, Schedule
from reconciler.types import Clock

logger = logging.getLogger("reconciler.scheduler")

Fire = Callable[[ResolvedTask, datetime], None]
"""What to do when a task's slot is due: (task, scheduled slot in UTC). Must not block."""

ScheduleOf = Callable[[ResolvedTask], Schedule | None]
"""Which of a task's schedules a scheduler keeps (None: the task has none of that kind)."""

Due = list[tuple[ResolvedTask, datetime]]
FireOrder = Callable[[Due], Due]
"""The order in which to fire the entries due at once (given by fire time, then task id).
Must not block."""


def backup_schedule(task: ResolvedTask) -> Schedule | None:
    return task.task.schedule


def drill_schedule(task: ResolvedTask) -> Schedule | None:
    """A task's restore-drill schedule (`verify.schedule`), kept by a scheduler of its own so a
    drill never takes a backup's slot."""
    return None if task.task.verify is None else task.task.verify.schedule


_COMPACT_SLACK = 64  # stale heap items tolerated beyond the live ones before a rebuild


class Scheduler:
    def __init__(
        self,
        clock: Clock,
        fire: Fire,
        *,
        max_sleep: timedelta = timedelta(seconds=60),
        schedule_of: ScheduleOf = backup_schedule,
        fire_order: FireOrder | None = None,
    ) -> None:
        if max_sleep <= timedelta(0):
            raise ValueError(f"max_sleep must be positive, got {max_sleep}")
        self._clock = clock
        self._fire = fire
        self._schedule_of = schedule_of
        self._fire_order = fire_order
        self._max_sleep = max_sleep
        self._tasks: dict[int, ResolvedTask] = {}
        self._next: dict[int, datetime] = {}  # unpaused tasks with a fire time: the truth
        self._heap: list[tuple[datetime, int]] = []  # may hold stale items, see module doc
        # The last slot fired per task, kept after remove() too, so that a task that comes back
        # (or changes its schedule) never fires a slot it already ran.
        self._last_slot: dict[int, datetime] = {}
        self._changed = asyncio.Event()
        self._stopped_at: datetime | None = None

    @property
    def tasks(self) -> Mapping[int, ResolvedTask]:
        """What is scheduled now, paused tasks included (read-only view)."""
        return MappingProxyType(self._tasks)

    def upsert(self, task: ResolvedTask, now: datetime) -> None:
        """Add a task or replace its entry.

        An unchanged schedule and paused flag keep the pending fire time, so an update that lands
        at the fire time neither skips nor repeats it. Otherwise the next fire is strictly after
        `now` and after the last slot this task fired.
        """
        previous = self._tasks.get(task.id)
        self._tasks[task.id] = task
        if previous is not None and self._timing(previous) == self._timing(task):
            return
        if task.task.paused:
            self._unschedule(task.id)
        else:
            after = max(now, self._last_slot.get(task.id, now))
            self._schedule(task, after)
        self.wake()

    def remove(self, task_id: int) -> None:
        if self._tasks.pop(task_id, None) is not None:
            self._unschedule(task_id)
            self.wake()

    def next_fire(self, task_id: int) -> datetime | None:
        """When the task fires next; None when it is unknown, paused or never fires."""
        return self._next.get(task_id)

    def upcoming(
        self, task_ids: Iterable[int] | None = None, limit: int | None = None
    ) -> list[tuple[ResolvedTask, datetime]]:
        """Pending (task, fire time) pairs, soonest first (ties by task id)."""
        if task_ids is None:
            pending: Iterable[tuple[datetime, int]] = ((at, i) for i, at in self._next.items())
        else:
            pending = {(self._next[i], i) for i in task_ids if i in self._next}
        chosen = sorted(pending) if limit is None else heapq.nsmallest(limit, pending)
        return [(self._tasks[task_id], at) for at, task_id in chosen]

    def pop_due(self, now: datetime) -> Due:
        """Entries due at `now`, each rescheduled to its first slot after `now`.

        A task that missed several slots (the daemon was suspended) comes back once, with its
        most recent slot: never one run per missed slot.
        """
        due = []
        while self._heap and self._heap[0][0] <= now:
            at, task_id = heapq.heappop(self._heap)
            if self._next.get(task_id) != at:
                continue  # stale
            task = self._tasks[task_id]
            schedule = self._schedule_of(task)
            assert schedule is not None  # a task without one is never in the heap
            slot = max(at, previous_fire(schedule, now) or at)
            due.append((task, slot))
            self._fired(task, slot, now)
        return due

    def catch_up(
        self,
        last_fired: Mapping[int, datetime],
        now: datetime,
        deadline: timedelta,
        alive: Sequence[tuple[datetime, datetime]] = (),
    ) -> list[tuple[ResolvedTask, datetime]]:
        """One (task, slot) per unpaused task whose most recent slot was missed.

        A slot is missed when it is later than `last_fired[task_id]`, not already fired by this
        scheduler, no older than `deadline`, and outside every (since, until) interval of `alive`
        (when a daemon was up: a slot it did not fire, say because the schedule changed after the
        slot's time, was not missed). Tasks absent from `last_fired` are never caught up (a
        brand-new task waits for its first slot). The caught-up slot counts as fired.
        """
        missed = []
        for task_id, task in self._tasks.items():
            schedule = self._schedule_of(task)
            if task.task.paused or schedule is None or task_id not in last_fired:
                continue
            slot = previous_fire(schedule, now)
            if slot is None or now - slot > deadline:
                continue
            already = max(last_fired[task_id], self._last_slot.get(task_id, last_fired[task_id]))
            if slot > already and not any(since <= slot <= until for since, until in alive):
                missed.append((task, slot))
        for task, slot in missed:
            self._fired(task, slot, now)
        if missed:
            self.wake()
        return sorted(missed, key=lambda pair: (pair[1], pair[0].id))

    def wake(self) -> None:
        """Re-evaluate now: something changed, or the clock moved. Call from the loop's thread."""
        self._changed.set()

    @property
    def stopped_at(self) -> datetime | None:
        """When `stop` was called; None while it fires."""
        return self._stopped_at

    def stop(self, now: datetime) -> None:
        """Fire nothing from `now` on (the daemon is stopping): `run()` returns. Slots due from
        then on are missed, so the next start catches them up. Call from the loop's thread."""
        self._stopped_at = now
        self.wake()

    async def run(self) -> None:
        """Fire due tasks, then sleep until the next fire time or `wake()`; until cancelled or
        stopped."""
        while self._stopped_at is None:
            # Cleared before looking, so a wake() while firing is not lost.
            self._changed.clear()
            due = self.pop_due(self._clock.now())
            if self._fire_order is not None:
                due = self._fire_order(due)
            for task, slot in due:
                try:
                    self._fire(task, slot)
                except Exception:
                    logger.exception("firing task %d for %s failed", task.id, slot)
            try:
                async with asyncio.timeout(self._sleep_seconds()):
                    await self._changed.wait()
            except TimeoutError:
                pass

    def _sleep_seconds(self) -> float:
        earliest = self._earliest()
        if earliest is None:
            return self._max_sleep.total_seconds()
        wait = min(earliest - self._clock.now(), self._max_sleep)
        return max(wait.total_seconds(), 0.0)

    def _earliest(self) -> datetime | None:
        while self._heap and self._next.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def _fired(self, task: ResolvedTask, slot: datetime, now: datetime) -> None:
        self._last_slot[task.id] = slot
        self._schedule(task, max(slot, now))

    def _schedule(self, task: ResolvedTask, after: datetime) -> None:
        schedule = self._schedule_of(task)
        if schedule is None:
            self._unschedule(task.id)
            return
        try:
            at = next_fire(schedule, after)
        except NoFireTime:
            logger.warning("task %d has a schedule that never fires; it will not run", task.id)
            self._unschedule(task.id)
            return
        self._next[task.id] = at
        heapq.heappush(self._heap, (at, task.id))
        if len(self._heap) > 2 * len(self._next) + _COMPACT_SLACK:
            self._heap = [(when, task_id) for task_id, when in self._next.items()]
            heapq.heapify(self._heap)

    def _unschedule(self, task_id: int) -> None:
        self._next.pop(task_id, None)  # its heap item is now stale

    def _timing(self, task: ResolvedTask) -> tuple[Schedule | None, bool]:
        return self._schedule_of(task), task.task.paused
