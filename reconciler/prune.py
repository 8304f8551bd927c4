"""Apply a task's retention policy to the backups its destination holds: the one place that
lists and deletes for retention, used by a run's rotation and by `reconciler prune`.

A restic repository decides for itself: `restic forget --tag task:<id>` with the policy's rules
(restic's calendar, in the time zone each snapshot was taken in: the task's). Every other store
is decided here from its listing (`retention.decide`), so backups copied in, or made before the
state store was lost, count too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from zoneinfo import ZoneInfo

from reconciler.destinations import DestinationStore, open_destination
from reconciler.destinations.restic import ResticStore
from reconciler.models import ResolvedTask
from reconciler.retention import Decision, decide, policy_for
from reconciler.secrets import Secrets


def apply_retention(
    task: ResolvedTask,
    store: DestinationStore,
    *,
    apply: bool,
    log: Callable[[str], None],
    protect: Iterable[str] = (),
    wait: bool = True,
) -> list[Decision]:
    """Keep or remove for each of the task's backups on `store`, newest first; the removed ones
    are deleted (oldest first, each logged) when `apply`. `protect` (the backup just written) is
    kept whatever the policy says. Without `wait`, a restic repository busy with the daemon's
    other commands is left alone (nothing decided: [])."""
    storage = task.task.storage
    policy = policy_for(storage)
    if isinstance(store, ResticStore) and not policy.keeps_everything:
        forgot = store.forget(
            task.id, policy, storage.path, apply=apply, protect=protect, wait=wait
        )
        if forgot is None:
            log("the repository is busy with another backup: forgetting waits for the next run")
            return []
        if apply:
            for decision in reversed(forgot):
                if not decision.keep:
                    log(f"forgot {decision.name}")
        return forgot
    names = [backup.name for backup in store.list_backups(storage.path)]
    zone = ZoneInfo(task.task.schedule.timezone)
    decisions = decide(names, task.id, storage.appended_filename, policy, zone, protect)
    if apply:
        for decision in reversed(decisions):
            if not decision.keep:
                store.delete(storage.path, decision.name)
                log(f"deleted {decision.name}")
    return decisions


def prune(
    task: ResolvedTask,
    secrets: Secrets,
    *,
    apply: bool,
    known_hosts: Path | None = None,
) -> list[Decision]:
    """`reconciler prune`: the task's retention decisions (`apply_retention`), applied when
    `apply`."""
    store = open_destination(
        task.destination,
        secrets.resolve,
        known_hosts=known_hosts,
        timezone=task.task.schedule.timezone,
    )
    try:
        return apply_retention(task, store, apply=apply, log=lambda line: None)
    finally:
        store.close()
