"""The backup-task routes. Reads answer from the applied state; writes go through the Writer."""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.concurrency import run_in_threadpool

from reconciler import documents, taskfile
from reconciler.api import present, schemas
from reconciler.api.auth import Ability, Caller, require
from reconciler.api.context import ApiContext, context
from reconciler.api.errors import ApiError, Invalid, NotFound, responses
from reconciler.api.idempotency import HEADER, KeyedRequest, fingerprint
from reconciler.api.mapping import SECRET_FIELDS, request_field, task_edits
from reconciler.api.secretkeys import forget_unreferenced
from reconciler.api.writer import Base, Prepared
from reconciler.desired import DesiredState, errors_for_user
from reconciler.gitstore import Author
from reconciler.models import MAX_ID, BackupTask, ResolvedTask
from reconciler.runner import Admission
from reconciler.state.runs import LogTail

router = APIRouter(prefix="/api", tags=["backup tasks"])

_ID = re.compile(r"^[0-9]{1,15}$")
DEFAULT_PER_PAGE = 15
DELETED = "Backup task successfully deleted"
INITIATED = "Backup task initiated successfully."
NO_LOGS = "No logs found for this backup task."
# How much of a run's log one response carries: the tail, with a line saying what was left out.
LATEST_LOG_TAIL = LogTail(lines=1000, chars=1 << 20)
PAGE_LOG_TAIL = LogTail(lines=100, chars=64 << 10)  # per run, so a page of 100 stays bounded

Page = Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1")]
PerPage = Annotated[int, Query(ge=1, le=100, description="Items per page, at most 100")]
Ctx = Annotated[ApiContext, Depends(context)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=HEADER,
        min_length=1,
        max_length=255,
        pattern=r"^[!-~]+$",
        description="Any text (up to 255 visible ASCII characters) the client picks per change:"
        " a retry with the same key and body within 24 hours returns the first answer and"
        " writes nothing again.",
    ),
]


def _caller(ability: Ability) -> Any:
    return Depends(require(ability))


# Reads


@router.get(
    "/backup-tasks",
    operation_id="listBackupTasks",
    response_model=schemas.TaskPage,
    responses=responses(401, 403, 422),
    summary="List the caller's backup tasks",
)
def list_tasks(
    request: Request,
    ctx: Ctx,
    caller: Annotated[Caller, _caller(Ability.VIEW)],
    page: Page = 1,
    per_page: PerPage = DEFAULT_PER_PAGE,
) -> schemas.TaskPage:
    owned = _owned(ctx.engine.desired, caller)
    shown = owned[(page - 1) * per_page : page * per_page]
    return schemas.TaskPage(
        data=_resources(ctx, caller, shown),
        **_pagination(str(request.url_for("list_tasks")), page, per_page, len(owned), len(shown)),
    )


@router.get(
    "/backup-tasks/upcoming",
    operation_id="listUpcomingBackupRuns",
    response_model=schemas.UpcomingList,
    responses=responses(401, 403),
    summary="The caller's next scheduled runs, soonest first",
)
def upcoming(ctx: Ctx, caller: Annotated[Caller, _caller(Ability.VIEW)]) -> Any:
    runs = []
    for resolved in _owned(ctx.engine.desired, caller):
        at = ctx.engine.next_fire(resolved.id)
        if at is not None:
            runs.append((at, resolved))
    runs.sort(key=lambda item: (item[0], item[1].id))
    return schemas.UpcomingList(
        data=[
            schemas.Upcoming(
                id=resolved.id,
                label=resolved.task.label,
                next_run_utc_time=present.utc_text(at),
                next_run_local_time=present.local_text(at, caller.user.timezone),
            )
            for at, resolved in runs
        ]
    )


@router.get(
    "/backup-tasks/{task_id}",
    operation_id="showBackupTask",
    response_model=schemas.TaskResponse,
    responses=responses(401, 403, 404),
    summary="Show one backup task",
)
def show_task(ctx: Ctx, caller: Annotated[Caller, _caller(Ability.VIEW)], task_id: str) -> Any:
    resolved = _find(ctx.engine.desired, caller, task_id)
    return schemas.TaskResponse(data=_resources(ctx, caller, [resolved])[0])


@router.get(
    "/backup-tasks/{task_id}/status",
    operation_id="showBackupTaskStatus",
    response_model=schemas.TaskStatusResponse,
    responses=responses(401, 403, 404),
    summary="Whether the task is running now",
)
def task_status(ctx: Ctx, caller: Annotated[Caller, _caller(Ability.VIEW)], task_id: str) -> Any:
    resolved = _find(ctx.engine.desired, caller, task_id)
    status = ctx.state.runs.task_status(resolved.id)
    return schemas.TaskStatusResponse(
        data=schemas.TaskStatusData(id=resolved.id, status=status.value)
    )


@router.get(
    "/backup-tasks/{task_id}/latest-log",
    operation_id="showLatestBackupTaskLog",
    response_model=schemas.LogResponse,
    responses=responses(401, 403, 404),
    summary="The latest run's log",
)
def latest_log(ctx: Ctx, caller: Annotated[Caller, _caller(Ability.VIEW)], task_id: str) -> Any:
    resolved = _find(ctx.engine.desired, caller, task_id)
    run = ctx.state.runs.latest_run(resolved.id, LATEST_LOG_TAIL)
    if run is None:
        raise NotFound(NO_LOGS)
    return schemas.LogResponse(data=present.log(run))


@router.get(
    "/backup-tasks/{task_id}/logs",
    operation_id="listBackupTaskLogs",
    response_model=schemas.LogPage,
    responses=responses(401, 403, 404, 422),
    summary="Every run's log, newest first",
)
def logs(
    request: Request,
    ctx: Ctx,
    caller: Annotated[Caller, _caller(Ability.VIEW)],
    task_id: str,
    page: Page = 1,
    per_page: PerPage = DEFAULT_PER_PAGE,
) -> Any:
    resolved = _find(ctx.engine.desired, caller, task_id)
    runs, total = ctx.state.runs.page(resolved.id, (page - 1) * per_page, per_page, PAGE_LOG_TAIL)
    path = str(request.url_for("logs", task_id=str(resolved.id)))
    return schemas.LogPage(
        data=[present.log(run) for run in runs],
        **_pagination(path, page, per_page, total, len(runs)),
    )


@router.get(
    "/sync",
    operation_id="showSyncState",
    response_model=schemas.SyncResponse,
    responses=responses(401),
    summary="The applied revision and the config set's errors",
)
def sync_state(ctx: Ctx, caller: Annotated[Caller, Depends(require(None))]) -> Any:
    """A user's token sees its own files' errors and tasks; an operator's token sees all."""
    engine = ctx.engine
    desired = engine.desired
    if caller.token.operator:
        errors, tasks = desired.errors, len(desired.tasks)
    else:
        errors, tasks = errors_for_user(desired, caller.user.id), len(_owned(desired, caller))
    return schemas.SyncResponse(
        data=schemas.SyncData(
            revision=engine.revision,
            reconciled_at=present.utc_text(engine.reconciled_at) if engine.reconciled_at else None,
            tasks=tasks,
            errors=[
                schemas.ErrorLocation(
                    path=error.path, line=error.line, field=error.field, message=error.message
                )
                for error in errors
            ],
        )
    )


# Running


@router.post(
    "/backup-tasks/{task_id}/run",
    operation_id="runBackupTask",
    status_code=202,
    response_model=schemas.Message,
    responses=responses(401, 403, 404, 409, 429),
    summary="Start a run now",
)
async def run_task(
    ctx: Ctx, caller: Annotated[Caller, _caller(Ability.RUN)], task_id: str
) -> schemas.Message:
    resolved = _find(ctx.engine.desired, caller, task_id)
    wait = ctx.run_limiter.hit(caller.user.id, ctx.clock.now())
    if wait is not None:
        seconds = max(1, math.ceil(wait.total_seconds()))
        raise ApiError(
            429,
            f"Too many run requests: at most {ctx.run_limiter.limit} a minute."
            f" Try again in {seconds} seconds.",
            {"Retry-After": str(seconds)},
        )
    # It records the run in the state store, which can wait for SQLite's write lock.
    admission = await run_in_threadpool(ctx.runner.request_run, resolved, "api")
    if admission is not Admission.ACCEPTED:
        raise ApiError(409, f"{admission.message[:1].upper()}{admission.message[1:]}.")
    return schemas.Message(message=INITIATED)


# Writes


@router.post(
    "/backup-tasks",
    operation_id="createBackupTask",
    status_code=201,
    response_model=schemas.TaskResponse,
    responses=responses(400, 401, 403, 409, 422),
    summary="Create a backup task (commits a new task file)",
)
async def create_task(
    request: Request,
    ctx: Ctx,
    caller: Annotated[Caller, _caller(Ability.CREATE)],
    body: schemas.TaskCreate,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    given = body.model_fields_set
    nonce = secrets.token_hex(4)

    def prepare(base: Base) -> Prepared[Any]:
        desired = base.desired
        now = ctx.clock.now()
        files = ctx.engine.store.list_files(base.revision) if base.revision is not None else {}

        def render(task_id: int) -> tuple[str, str, dict[str, str], BackupTask]:
            keys = _secret_keys(task_id, body, given, nonce)
            edits = task_edits(body, given, None, now, keys)
            data = _nested({("id",): task_id, ("user_id",): caller.user.id, **edits})
            text = taskfile.new_task_text(data)
            path = taskfile.task_file_path(task_id, body.label)
            return path, text, keys, _validate(path, text, desired, caller)

        # Above every id git ever held, and every id committed here (ids are never reused);
        # nothing is reserved before the commit, so a refused or retried write uses none.
        highest = [
            ctx.task_ids.highest_ever(base.revision),
            ctx.state.task_id_counter.highest_task_id(),
        ]
        task_id = max([*highest, *desired.tasks]) + 1
        if task_id > MAX_ID:
            raise ApiError(409, f"Nothing was written: every task id up to {MAX_ID:,} is taken.")
        path, text, keys, task = render(task_id)
        if path in files:
            raise ApiError(409, f"Nothing was written: {path} already exists.")
        stored = _store_secrets(ctx, body, keys)

        def respond(applied: DesiredState) -> Any:
            return schemas.TaskResponse(data=_written(ctx, caller, applied, task, path))

        return Prepared(
            respond=respond,
            writes={path: text.encode()},
            author=_author(caller),
            message=f"api: create backup task {task_id} ({task.label})",
            task_id=task_id,
            rollback=lambda: ctx.secrets.forget(stored),
            committed=lambda _sha: ctx.state.task_id_counter.record_task_id(task_id),
        )

    keyed = await _keyed(request, caller, idempotency_key, 201, _replay_task(ctx, caller))
    return await ctx.writer.write(prepare, keyed)


@router.put(
    "/backup-tasks/{task_id}",
    operation_id="updateBackupTask",
    response_model=schemas.TaskResponse,
    responses=responses(400, 401, 403, 404, 409, 422),
    summary="Change the fields given (commits an edit of the task's file)",
)
async def update_task(
    ctx: Ctx,
    caller: Annotated[Caller, _caller(Ability.UPDATE)],
    task_id: str,
    body: schemas.TaskFields,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    given = body.model_fields_set
    nonce = secrets.token_hex(4)

    def prepare(base: Base) -> Prepared[Any]:
        desired = base.desired
        resolved = _find(desired, caller, task_id)
        path = desired.task_paths[resolved.id]
        old_text = _read_at(ctx, base.revision, path)
        current = _parse_task(path, old_text) or resolved.task
        keys = _secret_keys(resolved.id, body, given, nonce)
        edits = task_edits(body, given, current, ctx.clock.now(), keys)
        try:
            text = taskfile.edit_task_text(old_text, edits)
        except taskfile.TaskFileError as exc:
            raise ApiError(409, f"Nothing was written: {path} cannot be edited: {exc}") from exc
        task = _validate(path, text, desired, caller)

        def respond(applied: DesiredState) -> Any:
            return schemas.TaskResponse(data=_written(ctx, caller, applied, task, path))

        changed = _changed(old_text, text)
        if not changed:
            return Prepared(respond=respond)
        stored = _store_secrets(ctx, body, keys)
        replaced = [
            ref.secret
            for name in SECRET_FIELDS
            if name in given and (ref := getattr(current, name)) is not None and ref.secret
        ]
        return Prepared(
            respond=respond,
            writes={path: text.encode()},
            author=_author(caller),
            message=f"api: update backup task {resolved.id}"
            f" ({', '.join(changed)}{_zone_change(current, task)})",
            task_id=resolved.id,
            rollback=lambda: ctx.secrets.forget(stored),
            committed=lambda sha: _forget_unused(ctx, sha, replaced),
        )

    keyed = await _keyed(request, caller, idempotency_key, 200, _replay_task(ctx, caller))
    return await ctx.writer.write(prepare, keyed)


@router.delete(
    "/backup-tasks/{task_id}",
    operation_id="deleteBackupTask",
    response_model=schemas.Message,
    responses=responses(401, 403, 404, 409),
    summary="Delete a backup task (commits the removal of its file)",
)
async def delete_task(
    request: Request,
    ctx: Ctx,
    caller: Annotated[Caller, _caller(Ability.DELETE)],
    task_id: str,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    def prepare(base: Base) -> Prepared[schemas.Message]:
        desired = base.desired
        resolved = _find(desired, caller, task_id)
        task = resolved.task
        keys = [
            ref.secret
            for ref in (task.encryption_password, task.isolated_password)
            if ref is not None and ref.secret
        ]
        return Prepared(
            respond=lambda _applied: schemas.Message(message=DELETED),
            writes={desired.task_paths[resolved.id]: None},
            author=_author(caller),
            message=f"api: delete backup task {resolved.id} ({task.label})",
            task_id=resolved.id,
            committed=lambda sha: _forget_unused(ctx, sha, keys),
        )

    keyed = await _keyed(
        request,
        caller,
        idempotency_key,
        200,
        lambda _desired, _id: schemas.Message(message=DELETED),
    )
    return await ctx.writer.write(prepare, keyed)


# Helpers


async def _keyed(
    request: Request,
    caller: Caller,
    key: str | None,
    status: int,
    replay: Callable[[DesiredState, int | None], Any],
) -> KeyedRequest | None:
    if key is None:
        return None
    body = await request.body()  # already read and kept by FastAPI for the body model
    print_ = fingerprint(request.method, request.url.path, body)
    return KeyedRequest(caller.user.id, key, print_, status, replay)


def _replay_task(ctx: ApiContext, caller: Caller) -> Callable[[DesiredState, int | None], Any]:
    """The task as it is now, for a keyed write that an earlier attempt already committed."""

    def replay(desired: DesiredState, task_id: int | None) -> Any:
        resolved = None if task_id is None else desired.tasks.get(task_id)
        if resolved is None or resolved.task.user_id != caller.user.id:
            raise ApiError(
                409,
                f"This request was already carried out for task {task_id}, which no longer exists.",
            )
        return schemas.TaskResponse(data=_resources(ctx, caller, [resolved])[0])

    return replay


def _owned(desired: DesiredState, caller: Caller) -> list[ResolvedTask]:
    return sorted(
        (task for task in desired.tasks.values() if task.task.user_id == caller.user.id),
        key=lambda task: task.id,
    )


def _find(desired: DesiredState, caller: Caller, raw_id: str) -> ResolvedTask:
    """The caller's task; anything else (unknown, not a number, someone else's) is a 404."""
    if not _ID.match(raw_id):
        raise NotFound()
    resolved = desired.tasks.get(int(raw_id))
    if resolved is None or resolved.task.user_id != caller.user.id:
        raise NotFound()
    if resolved.id not in desired.task_paths:
        raise NotFound()
    return resolved


def _resources(
    ctx: ApiContext, caller: Caller, tasks: Sequence[ResolvedTask]
) -> list[schemas.Task]:
    now = ctx.clock.now()
    ids = [task.id for task in tasks]
    last = ctx.state.runs.last_run_at(ids)
    statuses = ctx.state.runs.task_statuses(ids)
    paths = ctx.engine.desired.task_paths
    times = ctx.engine.file_times([paths[i] for i in ids if i in paths])
    return [
        present.task(
            resolved.task,
            caller.user,
            status=statuses[resolved.id],
            last_run=last.get(resolved.id),
            file_times=times[paths[resolved.id]] if resolved.id in paths else None,
            now=now,
        )
        for resolved in tasks
    ]


def _written(
    ctx: ApiContext, caller: Caller, applied: DesiredState, task: BackupTask, path: str
) -> schemas.Task:
    """The resource after a write: as applied, or as written if the engine could not apply it."""
    resolved = applied.tasks.get(task.id)
    if resolved is not None and resolved.task == task:
        return _resources(ctx, caller, [resolved])[0]
    return present.task(
        task,
        caller.user,
        status=ctx.state.runs.task_status(task.id),
        last_run=ctx.state.runs.last_run_at([task.id]).get(task.id),
        file_times=ctx.engine.file_times([path])[path],
        now=ctx.clock.now(),
    )


def _pagination(path: str, page: int, per_page: int, total: int, shown: int) -> dict[str, Any]:
    last_page = max(1, math.ceil(total / per_page))
    suffix = "" if per_page == DEFAULT_PER_PAGE else f"&per_page={per_page}"

    def url(number: int) -> str:
        return f"{path}?page={number}{suffix}"

    first_item = (page - 1) * per_page + 1
    return {
        "links": schemas.Links(
            first=url(1),
            last=url(last_page),
            prev=url(page - 1) if 1 < page <= last_page + 1 else None,
            next=url(page + 1) if page < last_page else None,
        ),
        "meta": schemas.Meta(
            current_page=page,
            from_=first_item if shown else None,
            last_page=last_page,
            path=path,
            per_page=per_page,
            to=first_item + shown - 1 if shown else None,
            total=total,
        ),
    }


def _author(caller: Caller) -> Author:
    return Author(name=caller.user.name, email=caller.user.email)


def _read_at(ctx: ApiContext, revision: str | None, path: str) -> str:
    store = ctx.engine.store
    blob = store.list_files(revision).get(path) if revision is not None else None
    if blob is None:
        raise NotFound()
    if store.blob_sizes([blob])[blob] > documents.MAX_FILE_BYTES:
        raise ApiError(
            409,
            f"Nothing was written: {path} is over the {documents.MAX_FILE_BYTES:,}-byte limit for"
            " a config file; its last good version runs until it is fixed in git.",
        )
    content = store.read_blobs([blob])[blob]
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(409, f"Nothing was written: {path} is not UTF-8 text.") from exc


def _parse_task(path: str, text: str) -> BackupTask | None:
    parsed = documents.parse_file(path, text.encode())
    objects = [item for item in parsed.objects if isinstance(item, BackupTask)]
    return objects[0] if parsed.ok and objects else None


def _validate(path: str, text: str, desired: DesiredState, caller: Caller) -> BackupTask:
    """The task the new text declares, parsed exactly as the engine will parse it."""
    parsed = documents.parse_file(path, text.encode())
    errors: dict[str, list[str]] = {}
    for error in parsed.errors:
        errors.setdefault(request_field(error.field), []).append(error.message)
    if errors:
        raise Invalid(errors)
    task = parsed.objects[0]
    assert isinstance(task, BackupTask)
    server = desired.servers.get(task.remote_server_id)
    if server is None or server.user_id != caller.user.id:
        errors["remote_server_id"] = ["The selected remote server id is invalid."]
    destination = desired.destinations.get(task.backup_destination_id)
    if destination is None or destination.user_id != caller.user.id:
        errors["backup_destination_id"] = ["The selected backup destination id is invalid."]
    for index, stream_id in enumerate(task.notification_stream_ids):
        stream = desired.notifications.get(stream_id)
        if stream is None or stream.user_id != caller.user.id:
            errors[f"notification_stream_ids.{index}"] = [
                "The selected notification stream id is invalid."
            ]
    if errors:
        raise Invalid(errors)
    return task


def _changed(old_text: str, new_text: str) -> list[str]:
    """Top-level keys whose values differ, in file order (for the commit message)."""
    old = taskfile.load_task_data(old_text)
    new = taskfile.load_task_data(new_text)
    keys = list(dict.fromkeys([*new, *old]))
    return [key for key in keys if old.get(key) != new.get(key)]


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


def _secret_keys(
    task_id: int, body: schemas.TaskFields, given: set[str], nonce: str
) -> dict[str, str]:
    """A fresh store key per secret sent, so a failed write never alters a secret in use."""
    return {
        name: f"task-{task_id}-{name.replace('_', '-')}-{nonce}"
        for name in SECRET_FIELDS
        if name in given and getattr(body, name)
    }


def _store_secrets(ctx: ApiContext, body: schemas.TaskFields, keys: Mapping[str, str]) -> list[str]:
    for name, key in keys.items():
        ctx.secrets.put(key, getattr(body, name))
    return list(keys.values())


def _zone_change(old: BackupTask, new: BackupTask) -> str:
    """The API's times are UTC: the commit says so when that moves a task off its own zone."""
    before, after = old.schedule.timezone, new.schedule.timezone
    return "" if before == after else f"; timezone {before} -> {after}"


def _forget_unused(ctx: ApiContext, revision: str, keys: Sequence[str]) -> None:
    """Keys the written task no longer uses, unless another committed file still names them."""
    forget_unreferenced(ctx.engine.store, ctx.secrets, revision, keys)
