"""The diff between desired and running tasks: by id, field by field."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given
from hypothesis import strategies as st

from reconciler.desired import DesiredState, build_desired
from reconciler.documents import parse_file
from reconciler.models import ResolvedTask
from reconciler.plan import Plan, make_plan, render_plan
from tests import configset


def resolved(*tasks: str) -> dict[int, ResolvedTask]:
    files = {**configset.base_files()}
    files.update({f"tasks/{index}.yaml": text for index, text in enumerate(tasks)})
    state = build_desired(
        {path: parse_file(path, text.encode()) for path, text in files.items()}, DesiredState()
    )
    assert state.errors == ()
    return dict(state.tasks)


def apply(plan: Plan, running: Mapping[int, ResolvedTask]) -> dict[int, ResolvedTask]:
    result = dict(running)
    for task in plan.removed:
        del result[task.id]
    for task in plan.added:
        result[task.id] = task
    for change in plan.changed:
        result[change.task.id] = change.task
    return result


def test_nothing_to_do_when_desired_equals_running() -> None:
    tasks = resolved(configset.task(1))
    assert make_plan(tasks, tasks).empty


def test_new_tasks_are_added_and_missing_ones_removed() -> None:
    plan = make_plan(resolved(configset.task(2)), resolved(configset.task(1)))
    assert [task.id for task in plan.added] == [2]
    assert [task.id for task in plan.removed] == [1]


def test_a_change_lists_each_changed_field() -> None:
    old = resolved(configset.task(1))
    new = resolved(configset.task(1, label="renamed", schedule={"custom_cron": "0 4 * * *"}))
    (change,) = make_plan(new, old).changed
    fields = {item.field: (item.old, item.new) for item in change.fields}
    assert fields["task.label"] == ("task 1", "renamed")
    assert fields["task.schedule.custom_cron"] == (None, "0 4 * * *")
    assert fields["task.schedule.time"] == ("02:30", None)


def test_render_reads_like_terraform_plan() -> None:
    old = resolved(configset.task(1), configset.task(3))
    new = resolved(configset.task(1, label="renamed"), configset.task(2))
    lines = render_plan(make_plan(new, old))
    assert "+ task 2 (task 2) will be added" in lines
    assert "~ task 1 (renamed) will change:" in lines
    assert "    task.label: 'task 1' -> 'renamed'" in lines
    assert "- task 3 (task 3) will be removed" in lines
    assert lines[-1] == "Plan: 1 to add, 1 to change, 1 to remove."


labels = st.sampled_from(["a", "b", "c"])
task_maps = st.dictionaries(st.integers(1, 6), labels, max_size=6)


def _tasks(spec: Mapping[int, str]) -> dict[int, ResolvedTask]:
    return resolved(*(configset.task(task_id, label=label) for task_id, label in spec.items()))


@given(task_maps, task_maps)
def test_applying_the_plan_makes_running_equal_desired(
    desired: Mapping[int, str], running: Mapping[int, str]
) -> None:
    wanted, current = _tasks(desired), _tasks(running)
    assert apply(make_plan(wanted, current), current) == wanted


@given(task_maps, task_maps)
def test_planning_again_after_applying_finds_nothing(
    desired: Mapping[int, str], running: Mapping[int, str]
) -> None:
    wanted, current = _tasks(desired), _tasks(running)
    assert make_plan(wanted, apply(make_plan(wanted, current), current)).empty


@given(task_maps, task_maps, st.sets(st.integers(1, 6)))
def test_a_plan_told_where_the_states_can_differ_is_the_full_plan(
    desired: Mapping[int, str], running: Mapping[int, str], extra: set[int]
) -> None:
    wanted, current = _tasks(desired), _tasks(running)
    differing = {
        task_id
        for task_id in wanted.keys() | current.keys()
        if wanted.get(task_id) != current.get(task_id)
    }
    assert make_plan(wanted, current, differing | extra) == make_plan(wanted, current)


def test_a_hook_change_is_a_field_change() -> None:
    running = resolved(configset.task(1, hooks={"before": ["echo one"]}))
    desired = resolved(configset.task(1, hooks={"before": ["echo two"], "timeout": 60}))

    (change,) = make_plan(desired, running).changed

    assert [(item.field, item.old, item.new) for item in change.fields] == [
        ("task.hooks.before", ["echo one"], ["echo two"]),
        ("task.hooks.timeout", 300, 60),
    ]
