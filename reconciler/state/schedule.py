"""The scheduler's bookkeeping: the interface every state backend implements.

Last fired slots, when each task was first seen, and when a daemon was up: catch-up at start
counts a slot as missed only if no daemon was up at that time.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol


class ScheduleBookkeeping(Protocol):
    def record_fires(self, fires: Iterable[tuple[int, datetime]]) -> None:
        """Each (task id, slot): the task fired for `slot`, replacing the slot it fired for
        before. One write for all of them."""
        ...

    def last_fired(self) -> dict[int, datetime]: ...

    def mark_seen(self, task_ids: Iterable[int], now: datetime) -> None:
        """The tasks exist from `now` on; a task seen before keeps its first time."""
        ...

    def first_seen(self) -> dict[int, datetime]: ...

    def begin_alive(self, now: datetime, forget_before: datetime) -> int:
        """A daemon is up from `now` on; intervals that ended before `forget_before` are
        dropped. Returns the interval to extend with `still_alive`."""
        ...

    def still_alive(self, interval: int, now: datetime) -> None: ...

    def alive_since(self, since: datetime) -> list[tuple[datetime, datetime]]:
        """(since, until) of every interval a daemon was up that ended at `since` or later."""
        ...
