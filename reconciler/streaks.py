"""Which event a run's outcome sends to a stream, from the failure streak before it. Pure.

The streak comes from the run history in the state store (the task's runs before this one,
newest first), never from memory, so a restart neither repeats a failure message nor forgets a
recovery.
"""

from __future__ import annotations

from collections.abc import Iterable, Set

from reconciler.models import NotificationEvent
from reconciler.types import RunStatus


def failures_before(previous: Iterable[RunStatus]) -> int:
    """How many failed runs came right before this one: `previous` is the task's earlier runs,
    newest first; the count stops at the newest success."""
    count = 0
    for status in previous:
        if status is RunStatus.SUCCESSFUL:
            break
        if status is RunStatus.FAILED:
            count += 1
    return count


def event_to_send(
    successful: bool, failed_before: int, wanted: Set[NotificationEvent], repeat: bool
) -> NotificationEvent | None:
    """The one event this run sends to a stream that wants `wanted`, or None.

    A failure is sent when it starts a streak, and every time with `repeat`. A success right
    after failures is a recovery: sent to a stream that wants recoveries or every success (one
    message, which says how many runs failed). Other successes go to streams that want them all.
    """
    if not successful:
        starts_streak = failed_before == 0
        return (
            NotificationEvent.FAILURE
            if NotificationEvent.FAILURE in wanted and (starts_streak or repeat)
            else None
        )
    if failed_before and wanted & {NotificationEvent.RECOVERY, NotificationEvent.SUCCESS}:
        return NotificationEvent.RECOVERY
    return NotificationEvent.SUCCESS if NotificationEvent.SUCCESS in wanted else None
