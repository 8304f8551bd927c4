"""Runs this process carried out, counted per task as each ends, for the metrics' counters.

Counted in memory, not read from the state store: the run history is pruned (`--keep-runs`), and
a counter read from it would go down. A restart starts the counts at zero, which Prometheus reads
as a counter reset (`rate`, `increase` handle it). Bounded by the number of tasks.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import timedelta

from reconciler.types import RunStatus

# Upper bounds, in seconds, of the run-duration histogram: a second to a day.
DURATION_BUCKETS = (1.0, 10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0)


@dataclass(frozen=True)
class TaskTally:
    runs: dict[RunStatus, int] = field(default_factory=dict)  # ended runs by result
    # Runs that took at most DURATION_BUCKETS[i] seconds, per bucket (not cumulative); the last
    # entry counts the longer ones.
    durations: tuple[int, ...] = (0,) * (len(DURATION_BUCKETS) + 1)
    duration_sum: float = 0.0  # seconds
    stored_bytes: int = 0  # by successful runs


class RunTally:
    """Thread-safe: runs end on worker threads, the metrics read at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[int, TaskTally] = {}

    def record(
        self, task_id: int, status: RunStatus, duration: timedelta, size: int | None
    ) -> None:
        seconds = max(0.0, duration.total_seconds())
        bucket = next(
            (index for index, bound in enumerate(DURATION_BUCKETS) if seconds <= bound),
            len(DURATION_BUCKETS),
        )
        with self._lock:
            tally = self._tasks.get(task_id, TaskTally())
            durations = list(tally.durations)
            durations[bucket] += 1
            self._tasks[task_id] = replace(
                tally,
                runs={**tally.runs, status: tally.runs.get(status, 0) + 1},
                durations=tuple(durations),
                duration_sum=tally.duration_sum + seconds,
                stored_bytes=tally.stored_bytes
                + (size or 0 if status is RunStatus.SUCCESSFUL else 0),
            )

    def snapshot(self) -> dict[int, TaskTally]:
        with self._lock:
            return dict(self._tasks)
