"""The rule book: last good versions, id conflicts, references, ownership."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given
from hypothesis import strategies as st

from reconciler.desired import DesiredState, build_desired
from reconciler.documents import Kind, ParsedFile, parse_file
from tests import configset


def parsed(files: Mapping[str, str]) -> dict[str, ParsedFile]:
    return {path: parse_file(path, text.encode()) for path, text in files.items()}


def build(files: Mapping[str, str], previous: DesiredState | None = None) -> DesiredState:
    return build_desired(parsed(files), previous or DesiredState())


def with_tasks(**tasks: str) -> dict[str, str]:
    return {
        **configset.base_files(),
        **{f"tasks/{name}.yaml": text for name, text in tasks.items()},
    }


def test_a_valid_set_resolves_every_task_with_what_it_points_at() -> None:
    state = build(with_tasks(a=configset.task(1), b=configset.task(2, user_id=2)))
    assert state.errors == ()
    assert sorted(state.tasks) == [1, 2]
    assert state.tasks[2].server.id == 2
    assert state.tasks[2].owner.timezone == "America/New_York"
    assert state.task_paths[1] == "tasks/a.yaml"


def test_a_broken_task_file_keeps_its_last_good_version() -> None:
    good = build(with_tasks(a=configset.task(1, label="nightly")))
    broken = build(with_tasks(a="id: 1\nlabel: [oops\n"), good)
    assert broken.tasks[1].task.label == "nightly"
    assert broken.errors[0].path == "tasks/a.yaml"


def test_a_broken_task_file_without_a_good_version_schedules_nothing() -> None:
    state = build(with_tasks(a="id: 1\nlabel: [oops\n"))
    assert state.tasks == {}
    assert len(state.errors) == 1


def test_fixing_a_broken_file_applies_the_fix() -> None:
    good = build(with_tasks(a=configset.task(1, label="old")))
    broken = build(with_tasks(a="id: [\n"), good)
    fixed = build(with_tasks(a=configset.task(1, label="new")), broken)
    assert fixed.tasks[1].task.label == "new"
    assert fixed.errors == ()


def test_a_deleted_task_file_removes_the_task() -> None:
    state = build(with_tasks(a=configset.task(1), b=configset.task(2)))
    after = build(with_tasks(b=configset.task(2)), state)
    assert sorted(after.tasks) == [2]


def test_the_file_already_holding_an_id_keeps_it_against_a_newcomer() -> None:
    before = build(with_tasks(z=configset.task(1, label="original")))
    after = build(with_tasks(z=configset.task(1, label="original"), a=configset.task(1)), before)
    assert after.tasks[1].task.label == "original"
    (error,) = after.errors
    assert (error.path, error.field, error.line) == ("tasks/a.yaml", "id", 1)
    assert "already defined in tasks/z.yaml" in error.message


def test_between_two_new_files_claiming_an_id_the_first_path_wins() -> None:
    state = build(with_tasks(b=configset.task(1, label="b"), a=configset.task(1, label="a")))
    assert state.tasks[1].task.label == "a"
    assert [error.path for error in state.errors] == ["tasks/b.yaml"]


def test_a_file_that_takes_another_files_id_keeps_its_own_last_good_task() -> None:
    before = build(with_tasks(a=configset.task(1), b=configset.task(2, label="two")))
    after = build(with_tasks(a=configset.task(1), b=configset.task(1, label="clash")), before)
    assert after.tasks[2].task.label == "two"
    assert after.tasks[1].task.label == "task 1"


def test_a_renamed_file_keeps_the_same_task() -> None:
    before = build(with_tasks(a=configset.task(1)))
    after = build(with_tasks(renamed=configset.task(1)), before)
    assert after.tasks[1] == before.tasks[1]
    assert after.task_paths[1] == "tasks/renamed.yaml"


def test_a_task_naming_a_missing_server_is_reported_on_its_line() -> None:
    state = build(with_tasks(a=configset.task(1, remote_server_id=9)))
    assert state.tasks == {}
    (error,) = state.errors
    assert (error.field, error.line) == ("remote_server_id", 4)
    assert "remote server 9 is not defined" in error.message


def test_a_task_using_another_users_destination_is_rejected() -> None:
    state = build(with_tasks(a=configset.task(1, backup_destination_id=2)))
    (error,) = state.errors
    assert error.field == "backup_destination_id"
    assert "belongs to another user" in error.message


def test_a_task_naming_a_missing_notification_stream_is_rejected() -> None:
    state = build(with_tasks(a=configset.task(1, notification_stream_ids=[5])))
    (error,) = state.errors
    assert error.field == "notification_stream_ids"


def test_a_task_whose_server_is_deleted_keeps_running_on_its_last_snapshot() -> None:
    before = build(with_tasks(a=configset.task(1)))
    files = with_tasks(a=configset.task(1))
    del files["servers/one.yaml"]
    after = build(files, before)
    assert after.tasks[1] is before.tasks[1]
    assert after.tasks[1].server.host == "127.0.0.1"
    assert [error.field for error in after.errors] == ["remote_server_id"]


def test_a_changed_server_reaches_every_task_that_uses_it() -> None:
    before = build(with_tasks(a=configset.task(1), b=configset.task(2)))
    files = with_tasks(a=configset.task(1), b=configset.task(2))
    files["servers/one.yaml"] = configset.server(1, 1, host="backup.example.com")
    after = build(files, before)
    assert {task.server.host for task in after.tasks.values()} == {"backup.example.com"}


def test_unchanged_tasks_are_reused_by_identity() -> None:
    files = parsed(with_tasks(a=configset.task(1), b=configset.task(2)))
    before = build_desired(files, DesiredState())
    files["tasks/b.yaml"] = parse_file("tasks/b.yaml", configset.task(2, label="new").encode())
    after = build_desired(files, before)
    assert after.tasks[1] is before.tasks[1]
    assert after.tasks[2] is not before.tasks[2]


task_sets = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d", "e"]),
    st.tuples(st.integers(1, 4), st.sampled_from(["x", "y"]), st.booleans()),
    max_size=5,
)


def _files(spec: Mapping[str, tuple[int, str, bool]]) -> dict[str, str]:
    tasks = {
        name: configset.task(task_id, label=label) if valid else "id: [broken"
        for name, (task_id, label, valid) in spec.items()
    }
    return with_tasks(**tasks)


@given(task_sets, task_sets)
def test_building_twice_from_the_same_files_changes_nothing(
    first: Mapping[str, tuple[int, str, bool]], second: Mapping[str, tuple[int, str, bool]]
) -> None:
    once = build(_files(second), build(_files(first)))
    twice = build(_files(second), once)
    assert twice.tasks == once.tasks
    assert twice.owners == once.owners
    assert twice.errors == once.errors


@given(task_sets)
def test_every_id_is_provided_by_exactly_one_file(
    spec: Mapping[str, tuple[int, str, bool]],
) -> None:
    state = build(_files(spec))
    for task_id, path in state.task_paths.items():
        assert state.owners[Kind.TASK][task_id] == path
    claimed = [task_id for _, (task_id, _, valid) in spec.items() if valid]
    assert set(state.tasks) == set(claimed)


@given(task_sets)
def test_the_result_does_not_depend_on_the_order_files_are_listed(
    spec: Mapping[str, tuple[int, str, bool]],
) -> None:
    files = parsed(_files(spec))
    forward = build_desired(files, DesiredState())
    backward = build_desired(dict(reversed(list(files.items()))), DesiredState())
    assert forward.tasks == backward.tasks
    assert forward.errors == backward.errors


def test_an_edit_of_one_task_file_revises_only_its_tasks() -> None:
    files = parsed(with_tasks(a=configset.task(1), b=configset.task(2)))
    before = build_desired(files, DesiredState())
    files["tasks/b.yaml"] = parse_file("tasks/b.yaml", configset.task(2, label="new").encode())
    after = build_desired(files, before, changed=["tasks/b.yaml"])
    assert after.revised == frozenset({2})
    assert after.tasks[2].task.label == "new"
    assert after.tasks[1] is before.tasks[1]
    assert after == build_desired(files, before)


def test_an_edit_that_moves_an_id_rebuilds_everything() -> None:
    files = parsed(with_tasks(a=configset.task(1), b=configset.task(2)))
    before = build_desired(files, DesiredState())
    files["tasks/b.yaml"] = parse_file("tasks/b.yaml", configset.task(3).encode())
    after = build_desired(files, before, changed=["tasks/b.yaml"])
    assert after.revised is None
    assert sorted(after.tasks) == [1, 3]


# One step of editing a config set: which file, and what it becomes (None: deleted).
edits = st.one_of(
    st.tuples(
        st.sampled_from(["tasks/a.yaml", "tasks/b.yaml", "tasks/c.yaml"]),
        st.none()
        | st.just("id: [broken")
        | st.builds(
            lambda task_id, user_id, server_id, label: configset.task(
                task_id, user_id=user_id, remote_server_id=server_id, label=label
            ),
            st.integers(1, 3),
            st.integers(1, 2),
            st.integers(1, 3),
            st.sampled_from(["x", "y"]),
        ),
    ),
    st.tuples(
        st.just("servers/one.yaml"),
        st.none() | st.builds(lambda user_id: configset.server(1, user_id), st.integers(1, 2)),
    ),
)


@given(st.lists(st.lists(edits, min_size=1, max_size=3), max_size=8))
def test_a_build_told_what_changed_equals_the_full_build(
    steps: list[list[tuple[str, str | None]]],
) -> None:
    texts = with_tasks(a=configset.task(1), b=configset.task(2))
    files = parsed(texts)
    state = build_desired(files, DesiredState())
    for step in steps:
        changed = set()
        for path, text in step:
            changed.add(path)
            if text is None:
                files.pop(path, None)
            else:
                files[path] = parse_file(path, text.encode())
        told = build_desired(files, state, changed)
        full = build_desired(files, state)
        assert told == full
        if told.revised is not None:
            ids = full.tasks.keys() | state.tasks.keys()
            assert {i for i in ids if full.tasks.get(i) is not state.tasks.get(i)} <= told.revised
        state = full


def test_an_edit_of_a_task_whose_id_another_file_claims_rebuilds_that_files_error() -> None:
    files = parsed(with_tasks(a=configset.task(1), b=configset.task(1, label="copy")))
    before = build_desired(files, DesiredState())
    files["tasks/a.yaml"] = parse_file("tasks/a.yaml", configset.task(1, user_id=2).encode())
    after = build_desired(files, before, changed=["tasks/a.yaml"])
    assert after == build_desired(files, before)
    (error,) = after.errors
    assert (error.path, error.field) == ("tasks/b.yaml", "id")
    assert "a file of another user" in error.message
