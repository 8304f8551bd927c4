"""Apply a task's retention policy to the backups its destination holds: the one place that
lists and deletes for retention, used by a run's rotation and by `reconciler prune`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from zoneinfo import ZoneInfo

from reconciler.destinations import DestinationStore, open_destination
from reconciler.models import ResolvedTask
from reconciler.retention import Decision, decide, policy_for
from reconciler.secrets import Secrets


def retention_decisions(
    task: ResolvedTask, store: DestinationStore, protect: Iterable[str] = ()
) -> list[Decision]:
    """Keep or remove for each of the task's backups on `store`, newest first, decided from the
    listing (so backups copied in, or made before the state store was lost, count too)."""
    storage = task.task.storage
    names = [backup.name for backup in store.list_backups(storage.path)]
    return decide(
        names,
        task.id,
        storage.appended_filename,
        policy_for(storage),
        ZoneInfo(task.task.schedule.timezone),
        protect,
    )


def remove_unkept(
    task: ResolvedTask,
    store: DestinationStore,
    decisions: Iterable[Decision],
    log: Callable[[str], None],
) -> None:
    """Delete the backups `decisions` remove, oldest first, logging each."""
    for decision in sorted(decisions, key=lambda decision: decision.taken_at):
        if not decision.keep:
            store.delete(task.task.storage.path, decision.name)
            log(f"deleted {decision.name}")


def prune(
    task: ResolvedTask, secrets: Secrets, *, apply: bool, known_hosts: Path | None = None
) -> list[Decision]:
    """The task's retention decisions (`retention_decisions`), applied when `apply`."""
    store = open_destination(task.destination, secrets.resolve, known_hosts=known_hosts)
    try:
        decisions = retention_decisions(task, store)
        if apply:
            remove_unkept(task, store, decisions, lambda line: None)
        return decisions
    finally:
        store.close()
