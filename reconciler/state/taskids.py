"""The highest task id the API ever committed: the interface every state backend implements.

Git history is the record of ids; this survives a history rewrite that drops the commits naming
them.
"""

from __future__ import annotations

from typing import Protocol


class TaskIdCounter(Protocol):
    def highest_task_id(self) -> int:
        """The highest task id recorded here (0: none)."""
        ...

    def record_task_id(self, task_id: int) -> None:
        """Remember that `task_id` was committed (after the commit: a failed write uses none)."""
        ...
