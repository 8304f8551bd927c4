"""The API's edits of the config set, decided without I/O.

Each `prepare_*` takes the desired state a write is prepared against and the request, and returns
an `Edit`: the files to commit, the commit message, the secrets to store first and the ones the
change stops naming. The desired state carries every file of its revision as parsed, text
included, so an edit reads nothing: the route (`reconciler.api.tasks`) does the I/O around it
(stores the secrets, hands the writes to the writer, and after the commit records a new id and
forgets unused secrets). The old file is not parsed again (the engine's parse says what its
fields were); the round-trip editor loads and renders it once; the new text is parsed once, and
that parse is the one the engine applies after the commit (`Engine.expect`).

An `Edit` is data, not the writer's `Prepared`: what happens around the commit is I/O (secrets,
the id counter, the response's run states), which `tasks` attaches in one place.

Ownership is the rule book's: a task is its user's, and the server, destination and streams it
names must be that user's too (`desired.reference_problems`, the check every reconcile makes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from reconciler import documents, taskfile
from reconciler.api.errors import ApiError, Invalid, NotFound
from reconciler.api.mapping import SECRET_FIELDS, request_field, task_edits
from reconciler.api.schemas import TaskFields
from reconciler.desired import DesiredState, reference_problems
from reconciler.documents import SYMLINK_REASON, ParsedFile
from reconciler.models import MAX_ID, BackupTask, ResolvedTask, User

_ID = re.compile(r"^[0-9]{1,15}$")
# What a client is told about a reference that does not resolve, whether it is undefined or
# another user's (a client is never told which: another user's ids are not its business).
_INVALID_REFERENCE: Final[Mapping[str, str]] = {
    "user_id": "The selected user id is invalid.",
    "remote_server_id": "The selected remote server id is invalid.",
    "backup_destination_id": "The selected backup destination id is invalid.",
    "notification_stream_ids": "The selected notification stream id is invalid.",
}


@dataclass(frozen=True)
class TaskChange:
    """What a create or update asks: the body, the fields the client sent, and a nonce that makes
    this request's secrets-store keys its own (a failed write never alters a secret in use)."""

    body: TaskFields
    given: frozenset[str]
    nonce: str


@dataclass(frozen=True)
class Edit:
    """A change decided against one desired state: what to commit, and what goes around it.

    `writes` maps config-set paths to new contents (None deletes); empty means nothing changes.
    `task` is the task as written (None for a delete) and `parsed` its file as the engine parses
    it. `secrets` (store key -> value) must be stored before the commit; `unused` names the store
    keys the change stops naming, to forget after it unless another committed file names them.
    """

    task_id: int
    path: str
    message: str
    writes: Mapping[str, bytes | None]
    task: BackupTask | None = None
    parsed: ParsedFile | None = None
    creates: bool = False
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    unused: tuple[str, ...] = ()


def owned_task(desired: DesiredState, user_id: int, raw_id: str) -> ResolvedTask:
    """The user's task with this id; anything else (unknown, not a number, another user's) is the
    same 404, so a client learns nothing about ids that are not its own."""
    return _owned(desired, user_id, parse_task_id(raw_id))


def parse_task_id(raw_id: str) -> int:
    """A task id from a path; anything that is not one is the 404 of an unknown task."""
    if not _ID.match(raw_id):
        raise NotFound()
    return int(raw_id)


def next_task_id(desired: DesiredState, highest_used: int) -> int:
    """Above every id in force and `highest_used` (the highest id git history or this daemon
    ever handed out), so an id is never reused."""
    task_id = max([highest_used, *desired.tasks]) + 1
    if task_id > MAX_ID:
        raise ApiError(409, f"Nothing was written: every task id up to {MAX_ID:,} is taken.")
    return task_id


def prepare_create(
    desired: DesiredState, change: TaskChange, user: User, highest_used: int, now: datetime
) -> Edit:
    """A new task file for `user`, under the next unused id."""
    task_id = next_task_id(desired, highest_used)
    keys = _secret_keys(task_id, change)
    edits = task_edits(change.body, set(change.given), None, now, keys)
    text = taskfile.new_task_text(_nested({("id",): task_id, ("user_id",): user.id, **edits}))
    assert change.body.label is not None  # a create's body requires it
    path = taskfile.task_file_path(task_id, change.body.label)
    parsed, task = _validated(path, text, desired, user)
    if path in desired.files:
        raise ApiError(409, f"Nothing was written: {path} already exists.")
    return Edit(
        task_id=task_id,
        path=path,
        message=f"api: create backup task {task_id} ({task.label})",
        writes={path: parsed.text},
        task=task,
        parsed=parsed,
        creates=True,
        secrets=_secret_values(change, keys),
    )


def prepare_update(
    desired: DesiredState, task_id: int, change: TaskChange, user: User, now: datetime
) -> Edit:
    """The user's task file with the fields the request gives changed, and nothing else: its
    comments, order and the fields only YAML knows stay as they are."""
    resolved = _owned(desired, user.id, task_id)
    path = desired.task_paths[task_id]
    committed = desired.files.get(path)
    old_text = _editable_text(path, committed)
    # The file as committed is what the request edits; while it is broken, its last good version
    # tells what the fields were.
    current = _declared_task(committed) or resolved.task
    keys = _secret_keys(task_id, change)
    edits = task_edits(change.body, set(change.given), current, now, keys)
    try:
        edited = taskfile.edit_task(old_text, edits)
    except taskfile.TaskFileError as exc:
        raise ApiError(409, f"Nothing was written: {path} cannot be edited: {exc}") from exc
    parsed, task = _validated(path, edited.text, desired, user)
    if not edited.changed:
        return Edit(task_id=task_id, path=path, message="", writes={}, task=task, parsed=parsed)
    replaced = tuple(
        ref.secret
        for name in SECRET_FIELDS
        if name in change.given and (ref := getattr(current, name)) is not None and ref.secret
    )
    return Edit(
        task_id=task_id,
        path=path,
        message=f"api: update backup task {task_id}"
        f" ({', '.join(edited.changed)}{_zone_change(current, task)})",
        writes={path: parsed.text},
        task=task,
        parsed=parsed,
        secrets=_secret_values(change, keys),
        unused=replaced,
    )


def prepare_delete(desired: DesiredState, task_id: int, user: User) -> Edit:
    """The removal of the user's task file; the secrets it named may then be unused."""
    task = _owned(desired, user.id, task_id).task
    path = desired.task_paths[task_id]
    return Edit(
        task_id=task_id,
        path=path,
        message=f"api: delete backup task {task_id} ({task.label})",
        writes={path: None},
        unused=tuple(
            ref.secret
            for ref in (task.encryption_password, task.isolated_password)
            if ref is not None and ref.secret
        ),
    )


def _owned(desired: DesiredState, user_id: int, task_id: int) -> ResolvedTask:
    resolved = desired.tasks.get(task_id)
    if resolved is None or resolved.task.user_id != user_id or task_id not in desired.task_paths:
        raise NotFound()
    return resolved


def _editable_text(path: str, committed: ParsedFile | None) -> str:
    if committed is None or committed.unread == SYMLINK_REASON:
        raise NotFound()  # a link is never written through: there is no task file to edit
    if committed.unread is not None:
        raise ApiError(
            409,
            f"Nothing was written: {path} is not read ({committed.unread}); its last good"
            " version runs until it is fixed in git.",
        )
    try:
        return committed.text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(409, f"Nothing was written: {path} is not UTF-8 text.") from exc


def _declared_task(committed: ParsedFile | None) -> BackupTask | None:
    if committed is None or not committed.ok:
        return None
    tasks = [item for item in committed.objects if isinstance(item, BackupTask)]
    return tasks[0] if tasks else None


def _validated(
    path: str, text: str, desired: DesiredState, user: User
) -> tuple[ParsedFile, BackupTask]:
    """The new file parsed exactly as the engine will parse it, and the task it declares, which
    must resolve as the user's; else Invalid naming the request's fields."""
    parsed = documents.parse_file(path, text.encode())
    errors: dict[str, list[str]] = {}
    for error in parsed.errors:
        errors.setdefault(request_field(error.field), []).append(error.message)
    if errors:
        raise Invalid(errors)
    task = parsed.objects[0]
    assert isinstance(task, BackupTask)
    if task.user_id != user.id:
        raise ApiError(
            409,
            f"Nothing was written: {path} declares user {task.user_id}; a task file naming"
            " another user is changed in git only.",
        )
    for problem in reference_problems(task, desired):
        name = problem.field if problem.index is None else f"{problem.field}.{problem.index}"
        errors[name] = [_INVALID_REFERENCE[problem.field]]
    if errors:
        raise Invalid(errors)
    return parsed, task


def _nested(edits: Mapping[taskfile.Path, object]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for path, value in edits.items():
        if value is taskfile.DELETE:
            continue
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return data


def _secret_keys(task_id: int, change: TaskChange) -> dict[str, str]:
    """A fresh store key per secret sent, so a failed write never alters a secret in use."""
    return {
        name: f"task-{task_id}-{name.replace('_', '-')}-{change.nonce}"
        for name in SECRET_FIELDS
        if name in change.given and getattr(change.body, name)
    }


def _secret_values(change: TaskChange, keys: Mapping[str, str]) -> dict[str, str]:
    values: dict[str, str] = {key: getattr(change.body, name) for name, key in keys.items()}
    return values


def _zone_change(old: BackupTask, new: BackupTask) -> str:
    """The API's times are UTC: the commit says so when that moves a task off its own zone."""
    before, after = old.schedule.timezone, new.schedule.timezone
    return "" if before == after else f"; timezone {before} -> {after}"
