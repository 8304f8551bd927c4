"""The API's edits, decided from a desired state alone: what a create, an update and a delete
commit, and what they refuse. Pure: no repository, no store, no app."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import taskfile
from reconciler.api import edits
from reconciler.api.edits import TaskChange
from reconciler.api.errors import ApiError, Invalid, NotFound
from reconciler.api.schemas import TaskCreate, TaskFields
from reconciler.desired import DesiredState, build_desired
from reconciler.documents import MAX_FILE_BYTES, SYMLINK_REASON, parse_file, refused
from reconciler.loader import parse_files
from reconciler.models import MAX_ID, User
from reconciler.retention import Policy, policy_for
from tests import configset
from tests.apirig import COMMENTED_TASK, notification

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ADA = User(id=1, name="Ada", email="ada@example.com", timezone="Europe/London")
COMMENTED = "tasks/shop/7-shop-database.yaml"


def desired_of(files: Mapping[str, str], previous: DesiredState | None = None) -> DesiredState:
    parsed = parse_files({path: text.encode() for path, text in files.items()})
    return build_desired(parsed, previous or DesiredState())


def config(**extra: str) -> dict[str, str]:
    """Ada (user 1) owns task 1 and the commented task 7; Grace (user 2) owns task 2."""
    return {
        **configset.base_files(),
        "notifications/one.yaml": notification(1, 1),
        "notifications/two.yaml": notification(2, 2),
        "tasks/1-first.yaml": configset.task(1),
        "tasks/2-second.yaml": configset.task(2, user_id=2),
        COMMENTED: COMMENTED_TASK,
        **extra,
    }


DESIRED = desired_of(config())


def change(body: TaskFields, nonce: str = "ab12cd34") -> TaskChange:
    return TaskChange(body, frozenset(body.model_fields_set), nonce)


def update(fields: dict[str, Any], task_id: int = 7) -> edits.Edit:
    body = TaskFields.model_validate(fields)
    return edits.prepare_update(DESIRED, task_id, change(body), ADA, NOW)


def create(
    fields: dict[str, Any], highest_used: int = 0, desired: DesiredState = DESIRED
) -> edits.Edit:
    body = TaskCreate.model_validate(
        {
            "label": "new",
            "remote_server_id": 1,
            "backup_destination_id": 1,
            "type": "files",
            "source_path": "/etc",
            "frequency": "daily",
            "time_to_run_at": "02:00",
            **fields,
        }
    )
    return edits.prepare_create(desired, change(body), ADA, highest_used, NOW)


def written(edit: edits.Edit) -> str:
    content = edit.writes[edit.path]
    assert content is not None
    return content.decode()


# Updating

labels = st.text(st.characters(codec="ascii", categories=["L", "N", "Zs"]), min_size=1).map(
    str.strip
)


@settings(max_examples=40, deadline=None)
@given(
    label=labels.filter(bool),
    description=st.none() | labels.filter(bool),
    max_backups=st.none() | st.integers(1, 99),
)
def test_an_update_keeps_every_comment_and_changes_only_what_the_body_gives(
    label: str, description: str | None, max_backups: int | None
) -> None:
    fields: dict[str, Any] = {"label": label}
    if description is not None:
        fields["description"] = description
    if max_backups is not None:
        fields["maximum_backups_to_keep"] = max_backups
    edit = update(fields)

    before = taskfile.load_task_data(COMMENTED_TASK)
    expected = {**before, "label": label}
    if description is not None:
        expected["description"] = description
    if max_backups is not None:
        expected["storage"] = {**before["storage"], "max_backups": max_backups}
    text = written(edit) if edit.writes else COMMENTED_TASK
    after = taskfile.load_task_data(text)
    assert after == expected
    comments = [line.partition("#")[2] for line in COMMENTED_TASK.splitlines() if "#" in line]
    assert all(f"#{comment}" in text for comment in comments)
    changed = [key for key in after if after[key] != before.get(key)]  # in the file's order
    assert edit.message == (f"api: update backup task 7 ({', '.join(changed)})" if changed else "")


def test_an_update_that_changes_nothing_writes_nothing() -> None:
    edit = update({"label": "Shop database"})
    assert edit.writes == {}
    assert edit.secrets == {}


def test_an_update_writes_the_file_the_engine_will_parse() -> None:
    edit = update({"label": "Renamed"})
    assert edit.parsed == parse_file(COMMENTED, written(edit).encode())
    assert edit.task is not None
    assert edit.task.label == "Renamed"


def test_a_secret_is_stored_under_a_fresh_key_and_the_replaced_one_is_named_unused() -> None:
    first = edits.prepare_update(
        DESIRED, 1, change(TaskFields(encryption_password="one"), "aa"), ADA, NOW
    )
    assert first.secrets == {"task-1-encryption-password-aa": "one"}
    assert "secret: task-1-encryption-password-aa" in written(first)
    assert "one" not in written(first).replace("task-1-encryption-password-aa", "")
    applied = desired_of({**config(), "tasks/1-first.yaml": written(first)})
    second = edits.prepare_update(
        applied, 1, change(TaskFields(encryption_password="two"), "bb"), ADA, NOW
    )
    assert second.secrets == {"task-1-encryption-password-bb": "two"}
    assert second.unused == ("task-1-encryption-password-aa",)


def test_another_users_task_cannot_be_updated() -> None:
    with pytest.raises(NotFound):
        update({"label": "mine now"}, task_id=2)


def test_an_update_of_a_file_refused_unread_is_a_409_naming_the_limit() -> None:
    oversized = {**config(), COMMENTED: COMMENTED_TASK + "#" * MAX_FILE_BYTES}
    applied = desired_of(oversized, DESIRED)
    assert applied.tasks[7] is DESIRED.tasks[7]  # its last good version keeps running
    with pytest.raises(ApiError) as raised:
        edits.prepare_update(applied, 7, change(TaskFields(label="x")), ADA, NOW)
    assert raised.value.status == 409
    assert "limit" in raised.value.message


def test_an_update_of_a_task_whose_file_became_a_link_is_a_404() -> None:
    parsed = parse_files({path: text.encode() for path, text in config().items()})
    parsed[COMMENTED] = refused(COMMENTED, SYMLINK_REASON)
    applied = build_desired(parsed, DESIRED)
    with pytest.raises(NotFound):
        edits.prepare_update(applied, 7, change(TaskFields(label="x")), ADA, NOW)


def test_an_update_never_gives_the_task_to_the_user_a_broken_file_names() -> None:
    """A person's broken edit names user 2; the last good version (user 1's) runs meanwhile.
    An API update by user 1 that would make the file valid must not hand the task over."""
    broken = COMMENTED_TASK.replace("user_id: 1", "user_id: 2").replace(
        "label: 'Shop database'   # shown on the dashboard\n", ""
    )
    applied = desired_of({**config(), COMMENTED: broken}, DESIRED)
    assert applied.tasks[7] is DESIRED.tasks[7]
    with pytest.raises(ApiError) as raised:
        edits.prepare_update(applied, 7, change(TaskFields(label="fixed")), ADA, NOW)
    assert raised.value.status == 409
    assert "user 2" in raised.value.message


# Ownership of what a task names: the rule book's


def test_a_server_of_another_user_is_refused_as_invalid() -> None:
    with pytest.raises(Invalid) as raised:
        create({"remote_server_id": 2})
    assert raised.value.errors == {
        "remote_server_id": ["The selected remote server id is invalid."]
    }


def test_a_stream_of_another_user_is_named_by_its_position() -> None:
    with pytest.raises(Invalid) as raised:
        update({"notification_stream_ids": [1, 2, 9]})
    assert raised.value.errors == {
        "notification_stream_ids.1": ["The selected notification stream id is invalid."],
        "notification_stream_ids.2": ["The selected notification stream id is invalid."],
    }


# Creating


def test_a_create_writes_a_new_file_for_the_caller_under_the_next_id() -> None:
    edit = create({"label": "Etc files"}, highest_used=40)
    assert (edit.task_id, edit.path, edit.creates) == (41, "tasks/41-etc-files.yaml", True)
    assert edit.task is not None
    assert edit.task.user_id == ADA.id
    assert edit.message == "api: create backup task 41 (Etc files)"


def test_a_create_never_overwrites_a_file_a_person_put_at_its_path() -> None:
    desired = desired_of(config(**{"tasks/8-new.yaml": "# a person's notes\n"}))
    with pytest.raises(ApiError) as raised:
        create({}, desired=desired)
    assert raised.value.status == 409
    assert "tasks/8-new.yaml already exists" in raised.value.message


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["create", "delete"]), max_size=25), st.integers(0, 10**6))
def test_ids_chosen_are_never_reused(steps: list[str], highest_at_start: int) -> None:
    """Creates and deletes in any order: an id, once chosen, is never chosen again, and is above
    every id in force and every id ever used."""
    task = DESIRED.tasks[1]
    in_force = dict.fromkeys(range(1, 4), task)
    highest = highest_at_start
    chosen: list[int] = []
    for step in steps:
        if step == "delete" and in_force:
            del in_force[max(in_force)]
            continue
        new = edits.next_task_id(DesiredState(tasks=in_force), highest)
        assert new > highest
        assert new not in in_force
        chosen.append(new)
        in_force[new] = task
        highest = new  # the id a committed create records
    assert len(set(chosen)) == len(chosen)


def test_no_id_is_chosen_past_the_largest_one() -> None:
    with pytest.raises(ApiError) as raised:
        edits.next_task_id(DESIRED, MAX_ID)
    assert raised.value.status == 409


# Deleting


def test_a_delete_removes_the_callers_file_and_names_its_secrets_unused() -> None:
    with_secret = update({"encryption_password": "pass"}, task_id=1)
    applied = desired_of({**config(), "tasks/1-first.yaml": written(with_secret)})
    edit = edits.prepare_delete(applied, 1, ADA)
    assert edit.writes == {"tasks/1-first.yaml": None}
    assert edit.unused == tuple(with_secret.secrets)
    assert edit.message == "api: delete backup task 1 (task 1)"


def test_another_users_task_cannot_be_deleted() -> None:
    with pytest.raises(NotFound):
        edits.prepare_delete(DESIRED, 2, ADA)


@pytest.mark.parametrize("raw", ["2", "99", "abc", "1e3", "-1", "0x7", "", "1" * 16])
def test_a_missing_foreign_or_malformed_id_is_the_same_404(raw: str) -> None:
    with pytest.raises(NotFound):
        edits.owned_task(DESIRED, ADA.id, raw)


def test_maximum_backups_to_keep_on_a_task_with_keep_becomes_its_last() -> None:
    keeping = configset.task(3, storage={"keep": {"daily": 7, "weekly": 4}})
    desired = desired_of(config(**{"tasks/3-keeping.yaml": keeping}))
    body = TaskFields.model_validate({"maximum_backups_to_keep": 2})
    edit = edits.prepare_update(desired, 3, change(body), ADA, NOW)
    assert edit.task is not None
    assert policy_for(edit.task.storage) == Policy(last=2, daily=7, weekly=4)


def test_maximum_backups_to_keep_on_a_task_with_keep_last_says_to_give_one() -> None:
    keeping = configset.task(3, storage={"keep": {"last": 3}})
    desired = desired_of(config(**{"tasks/3-keeping.yaml": keeping}))
    body = TaskFields.model_validate({"maximum_backups_to_keep": 2})
    with pytest.raises(Invalid) as refusal:
        edits.prepare_update(desired, 3, change(body), ADA, NOW)
    assert "give one of them" in str(refusal.value.errors)


HOOKS = {"before": ["pg_ctl stop 'x'\n"], "after": ["pg_ctl start"], "timeout": 60}


def test_an_update_keeps_the_tasks_hooks() -> None:
    desired = desired_of(config(**{"tasks/1-first.yaml": configset.task(1, hooks=HOOKS)}))
    body = TaskFields.model_validate({"label": "Renamed", "maximum_backups_to_keep": 3})
    edit = edits.prepare_update(desired, 1, change(body), ADA, NOW)

    assert taskfile.load_task_data(written(edit))["hooks"] == HOOKS
    assert edit.task is not None
    assert edit.task.hooks.before == ("pg_ctl stop 'x'\n",)
