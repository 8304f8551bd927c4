"""What applying the desired state would change in the running scheduler. Pure.

Tasks are matched by id, never by file, so a renamed file with the same id is an update (or
nothing at all), never a delete plus a create.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from reconciler.models import ResolvedTask


@dataclass(frozen=True, slots=True)
class FieldChange:
    field: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class TaskChange:
    task: ResolvedTask
    fields: tuple[FieldChange, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    added: tuple[ResolvedTask, ...] = ()
    changed: tuple[TaskChange, ...] = ()
    removed: tuple[ResolvedTask, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.changed or self.removed)


def make_plan(
    desired: Mapping[int, ResolvedTask],
    running: Mapping[int, ResolvedTask],
    only: Collection[int] | None = None,
) -> Plan:
    """What turns `running` into `desired`. `only`: the task ids the two can differ in, if the
    caller knows them (they are equal everywhere else); the plan then costs what they are."""
    added, removed, changed = [], [], []
    for task_id in desired.keys() | running.keys() if only is None else only:
        task, current = desired.get(task_id), running.get(task_id)
        if current is None:
            if task is not None:
                added.append(task)
        elif task is None:
            removed.append(current)
        # Identity first: an unchanged task is the very same object, so 10,000 compare for free.
        elif current is not task and current != task:
            changed.append(TaskChange(task, tuple(field_changes(current, task))))
    return Plan(
        added=tuple(sorted(added, key=_by_id)),
        changed=tuple(sorted(changed, key=lambda change: change.task.id)),
        removed=tuple(sorted(removed, key=_by_id)),
    )


def field_changes(old: ResolvedTask, new: ResolvedTask) -> Iterator[FieldChange]:
    """Leaf-level differences, named by dotted path (`task.schedule.time`, `server.host`)."""
    yield from _diff("", old.model_dump(mode="json"), new.model_dump(mode="json"))


def _diff(prefix: str, old: Any, new: Any) -> Iterator[FieldChange]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            yield from _diff(f"{prefix}{key}.", old.get(key), new.get(key))
        return
    if old != new:
        yield FieldChange(prefix.rstrip("."), old, new)


def render_plan(plan: Plan, baseline: str = "the running schedule") -> list[str]:
    """Lines in the spirit of `terraform plan`: + added, ~ changed (field by field), - removed.
    `baseline` names what the plan starts from (a git revision, say)."""
    if plan.empty:
        return [f"No changes: {baseline} matches the config set."]
    lines = []
    for task in plan.added:
        lines.append(f"+ task {task.id} ({task.task.label}) will be added")
    for change in plan.changed:
        lines.append(f"~ task {change.task.id} ({change.task.task.label}) will change:")
        for item in change.fields:
            lines.append(f"    {item.field}: {item.old!r} -> {item.new!r}")
    for task in plan.removed:
        lines.append(f"- task {task.id} ({task.task.label}) will be removed")
    counts = (
        f"{len(plan.added)} to add, {len(plan.changed)} to change, {len(plan.removed)} to remove"
    )
    lines.append(f"Plan: {counts}.")
    return lines


def _by_id(task: ResolvedTask) -> int:
    return task.id
