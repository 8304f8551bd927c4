"""What the API's reads compute from the applied revision alone, computed once per revision.

Per applied desired state: each user's tasks in id order, and each task's resource as JSON text
but for its run state (status and last run), which a read fills in live. The desired state's
identity is the key: the engine applies a new one for every revision, and the first read that
sees it starts afresh. A task's scheduled times are today's, so its entry also expires at the
end of the day in its schedule's timezone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from reconciler.api import present
from reconciler.desired import DesiredState
from reconciler.models import ResolvedTask, Schedule, User
from reconciler.types import TaskStatus

FileTimes = Callable[[Sequence[str]], Mapping[str, tuple[datetime, datetime] | None]]


@dataclass(frozen=True, slots=True)
class _Presented:
    template: present.TaskTemplate
    expires: datetime | None  # None: nothing in it depends on the date


class ReadCache:
    """Owned by the API context; thread-safe (reads run in worker threads), and its lock is never
    held across a blocking read.

    `file_times` is the engine's (blocking: the file-time index), asked once per task per
    revision.
    """

    def __init__(self, file_times: FileTimes) -> None:
        self._file_times = file_times
        self._lock = threading.Lock()
        self._desired: DesiredState | None = None
        self._owned: dict[int, tuple[User, list[ResolvedTask]]] = {}
        self._presented: dict[int, tuple[User, _Presented]] = {}

    def owned(self, desired: DesiredState, user: User) -> Sequence[ResolvedTask]:
        """`user`'s tasks in `desired`, by id."""
        with self._lock:
            self._follow(desired)
            cached = self._owned.get(user.id)
            if cached is None or cached[0] is not user:
                tasks = sorted(
                    (task for task in desired.tasks.values() if task.task.user_id == user.id),
                    key=lambda task: task.id,
                )
                cached = self._owned[user.id] = (user, tasks)
            return cached[1]

    def presented(
        self, desired: DesiredState, user: User, tasks: Sequence[ResolvedTask], now: datetime
    ) -> list[present.TaskTemplate] | None:
        """Each task's resource, waiting for its run state, if all are presented already; None
        if any is not. Never blocks: safe on the event loop."""
        templates = []
        with self._lock:
            self._follow(desired)
            for resolved in tasks:
                cached = self._cached(resolved.id, user, now)
                if cached is None:
                    return None
                templates.append(cached.template)
        return templates

    def resources(
        self, desired: DesiredState, user: User, tasks: Sequence[ResolvedTask], now: datetime
    ) -> list[present.TaskTemplate]:
        """Each task's resource, waiting for its run state. Blocking: a task not presented yet
        reads its file times, outside the lock, so that `presented` never waits for them."""
        with self._lock:
            self._follow(desired)
            found = {
                resolved.id: cached
                for resolved in tasks
                if (cached := self._cached(resolved.id, user, now)) is not None
            }
        missing = [resolved for resolved in tasks if resolved.id not in found]
        if missing:
            made = self._present(desired, user, missing, now)
            with self._lock:
                # Kept only if no newer revision was followed meanwhile.
                keep = desired is self._desired
                for resolved, presented in zip(missing, made, strict=True):
                    if keep:
                        self._presented[resolved.id] = (user, presented)
                    found[resolved.id] = presented
        return [found[resolved.id].template for resolved in tasks]

    def _cached(self, task_id: int, user: User, now: datetime) -> _Presented | None:
        cached = self._presented.get(task_id)
        if cached is not None and cached[0] is user and _fresh(cached[1], now):
            return cached[1]
        return None

    def _follow(self, desired: DesiredState) -> None:
        if desired is not self._desired:
            self._desired = desired
            self._owned.clear()
            self._presented.clear()

    def _present(
        self, desired: DesiredState, user: User, tasks: Sequence[ResolvedTask], now: datetime
    ) -> list[_Presented]:
        paths = desired.task_paths
        times = self._file_times([paths[task.id] for task in tasks if task.id in paths])
        return [
            _Presented(
                present.task_template(
                    present.task(
                        resolved.task,
                        user,
                        status=TaskStatus.READY,  # the template leaves it out
                        last_run=None,
                        file_times=times[paths[resolved.id]] if resolved.id in paths else None,
                        now=now,
                    )
                ),
                _day_end(resolved.task.schedule, now),
            )
            for resolved in tasks
        ]


def _fresh(presented: _Presented, now: datetime) -> bool:
    return presented.expires is None or now < presented.expires


def _day_end(schedule: Schedule, now: datetime) -> datetime | None:
    """When today's scheduled times (see `present.task`) become tomorrow's; None for a cron
    schedule, which shows no times."""
    if schedule.time is None:
        return None
    zone = ZoneInfo(schedule.timezone)
    tomorrow = now.astimezone(zone).date() + timedelta(days=1)
    return datetime.combine(tomorrow, time(0), tzinfo=zone).astimezone(UTC)
