"""The backup-task routes. Reads answer from the applied state; writes go through the Writer."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from reconciler.api import edits, present, schemas
from reconciler.api.auth import Ability, Caller, require
from reconciler.api.context import ApiContext, context
from reconciler.api.edits import Edit, TaskChange
from reconciler.api.errors import ApiError, Invalid, NotFound, responses
from reconciler.api.idempotency import HEADER, KeyedRequest, fingerprint
from reconciler.api.mapping import request_field
from reconciler.api.secretkeys import forget_unreferenced
from reconciler.api.writer import Base, Prepared
from reconciler.desired import DesiredState, errors_for_user
from reconciler.documents import ParsedFile
from reconciler.gitstore import Author
from reconciler.models import BackupTask, ResolvedTask
from reconciler.runner import Admission
from reconciler.state.runs import LogTail

router = APIRouter(prefix="/api", tags=["backup tasks"])

T = TypeVar("T")

DEFAULT_PER_PAGE = 15
DELETED = "Backup task successfully deleted"
INITIATED = "Backup task initiated successfully."
NO_LOGS = "No logs found for this backup task."
# A stopping daemon is usually back (restarted) within a minute.
STOPPING_RETRY_SECONDS = 60
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


# One dependency per ability, so a route that asks for its caller and its owned task checks the
# token once (FastAPI runs each dependency once per request).
_CALLERS = {ability: require(ability) for ability in Ability}


def _caller(ability: Ability) -> Any:
    return Depends(_CALLERS[ability])


def owned_task(ability: Ability) -> Callable[..., Awaitable[ResolvedTask]]:
    """A dependency: the caller's task named by the path's `task_id`, as applied; a 404 for
    anything else (unknown, not a number, another user's), after the token's 401 or 403."""

    async def dependency(ctx: ApiContext, caller: Caller, task_id: str) -> ResolvedTask:
        return edits.owned_task(ctx.engine.desired, caller.user.id, task_id)

    # As objects, not the strings `from __future__ import annotations` leaves: FastAPI resolves
    # strings in the module's globals, where this call's `ability` is not.
    dependency.__annotations__.update(ctx=Ctx, caller=Annotated[Caller, _caller(ability)])
    return dependency


async def _task_id(task_id: str) -> int:
    """A write's task id; whose task it is, is decided against the head the write is prepared
    from (a keyed retry of a delete replays its answer, though the task is gone)."""
    return edits.parse_task_id(task_id)


ViewedTask = Annotated[ResolvedTask, Depends(owned_task(Ability.VIEW))]
RunTask = Annotated[ResolvedTask, Depends(owned_task(Ability.RUN))]
TaskId = Annotated[int, Depends(_task_id)]


# Reads


@router.get(
    "/backup-tasks",
    operation_id="listBackupTasks",
    response_model=schemas.TaskPage,
    responses=responses(401, 403, 422),
    summary="List the caller's backup tasks",
)
async def list_tasks(
    request: Request,
    ctx: Ctx,
    caller: Annotated[Caller, _caller(Ability.VIEW)],
    page: Page = 1,
    per_page: PerPage = DEFAULT_PER_PAGE,
) -> Response:
    desired = ctx.engine.desired
    owned = ctx.reads.owned(desired, caller.user)
    shown = owned[(page - 1) * per_page : page * per_page]
    # This route's own URL: the same as url_for("list_tasks"), without searching the routes.
    path = str(request.url.replace(query=""))
    pagination = present.pagination(path, page, per_page, len(owned), len(shown), DEFAULT_PER_PAGE)
    live = await _live_resources(ctx, caller, desired, shown)
    data = present.json_array(live)
    members = {key: present.json_model(part) for key, part in pagination.items()}
    return _json_response({"data": data, **members})


@router.get(
    "/backup-tasks/upcoming",
    operation_id="listUpcomingBackupRuns",
    response_model=schemas.UpcomingList,
    responses=responses(401, 403),
    summary="The caller's next scheduled runs, soonest first",
)
def upcoming(ctx: Ctx, caller: Annotated[Caller, _caller(Ability.VIEW)]) -> Any:
    runs = []
    for resolved in ctx.reads.owned(ctx.engine.desired, caller.user):
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
async def show_task(
    ctx: Ctx, caller: Annotated[Caller, _caller(Ability.VIEW)], resolved: ViewedTask
) -> Response:
    desired = ctx.engine.desired
    (live,) = await _live_resources(ctx, caller, desired, [resolved])
    return _json_response({"data": live})


@router.get(
    "/backup-tasks/{task_id}/status",
    operation_id="showBackupTaskStatus",
    response_model=schemas.TaskStatusResponse,
    responses=responses(401, 403, 404),
    summary="Whether the task is running now",
)
def task_status(ctx: Ctx, resolved: ViewedTask) -> Any:
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
def latest_log(ctx: Ctx, resolved: ViewedTask) -> Any:
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
    resolved: ViewedTask,
    page: Page = 1,
    per_page: PerPage = DEFAULT_PER_PAGE,
) -> Any:
    runs, total = ctx.state.runs.page(resolved.id, (page - 1) * per_page, per_page, PAGE_LOG_TAIL)
    path = str(request.url_for("logs", task_id=str(resolved.id)))
    return schemas.LogPage(
        data=[present.log(run) for run in runs],
        **present.pagination(path, page, per_page, total, len(runs), DEFAULT_PER_PAGE),
    )


@router.get(
    "/backup-tasks/{task_id}/history",
    operation_id="listBackupTaskHistory",
    response_model=schemas.TaskHistoryPage,
    responses=responses(401, 403, 404, 422),
    summary="The commits that changed the task, newest first",
)
def task_history(
    request: Request,
    ctx: Ctx,
    resolved: ViewedTask,
    page: Page = 1,
    per_page: PerPage = DEFAULT_PER_PAGE,
) -> Any:
    """A sync route, so its git walk runs in a worker thread: the first after a start reads the
    branch's whole history, later ones only the commits since."""
    revision = ctx.engine.revision
    entries, total = ctx.history.page(revision, resolved.id, (page - 1) * per_page, per_page)
    path = str(request.url_for("task_history", task_id=str(resolved.id)))
    return schemas.TaskHistoryPage(
        data=[present.history_entry(entry) for entry in entries],
        **present.pagination(path, page, per_page, total, len(entries), DEFAULT_PER_PAGE),
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
        errors = errors_for_user(desired, caller.user.id)
        tasks = len(ctx.reads.owned(desired, caller.user))
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
            signature=present.signature_state(engine.trust),
            remote=present.remote(ctx.upstream),
            nodes=[
                schemas.NodeState(
                    id=node.node_id,
                    revision=node.revision,
                    revision_time=None
                    if node.revision_time is None
                    else present.utc_text(node.revision_time),
                    last_seen=present.utc_text(node.last_seen),
                )
                for node in ctx.state.nodes.nodes()
            ],
        )
    )


# Running


@router.post(
    "/backup-tasks/{task_id}/run",
    operation_id="runBackupTask",
    status_code=202,
    response_model=schemas.Message,
    responses=responses(401, 403, 404, 409, 429, 503),
    summary="Start a run now",
)
async def run_task(
    ctx: Ctx, caller: Annotated[Caller, _caller(Ability.RUN)], resolved: RunTask
) -> schemas.Message:
    ctx.run_limiter.enforce(caller.user.id, ctx.clock.now(), "run requests")
    # It records the run in the state store, which can wait for SQLite's write lock.
    admission = await run_in_threadpool(ctx.runner.request_run, resolved, "api")
    if admission is Admission.STOPPING:
        raise ApiError(
            503,
            "The daemon is shutting down and starts no new runs. Try again once it has restarted.",
            {"Retry-After": str(STOPPING_RETRY_SECONDS)},
        )
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
    change = TaskChange(body, frozenset(body.model_fields_set), secrets.token_hex(4))

    def prepare(base: Base) -> Prepared[Any]:
        # Above every id git ever held, every id committed here and every id the writes before
        # this one in its group take (ids are never reused); nothing is reserved before the
        # commit, so a refused or retried write uses none.
        highest = max(
            ctx.task_ids.highest_ever(base.revision),
            ctx.state.task_id_counter.highest_task_id(),
            *base.claimed_ids,
        )
        edit = edits.prepare_create(base.desired, change, caller.user, highest, ctx.clock.now())
        return _prepared(ctx, caller, edit, _respond_task(ctx, caller, edit))

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
    task_id: TaskId,
    body: schemas.TaskFields,
    request: Request,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    change = TaskChange(body, frozenset(body.model_fields_set), secrets.token_hex(4))

    def prepare(base: Base) -> Prepared[Any]:
        edit = edits.prepare_update(base.desired, task_id, change, caller.user, ctx.clock.now())
        return _prepared(ctx, caller, edit, _respond_task(ctx, caller, edit))

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
    task_id: TaskId,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    def prepare(base: Base) -> Prepared[schemas.Message]:
        edit = edits.prepare_delete(base.desired, task_id, caller.user)
        return _prepared(ctx, caller, edit, lambda _applied: schemas.Message(message=DELETED))

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


async def _live_resources(
    ctx: ApiContext, caller: Caller, desired: DesiredState, tasks: Sequence[ResolvedTask]
) -> list[str]:
    """The tasks' resources as JSON text: what the revision decides from the read cache, the
    run state live (one query each for the page's statuses and last runs, unless the state store
    is unchanged since the same page was read)."""
    now = ctx.clock.now()
    templates = ctx.reads.presented(desired, caller.user, tasks, now)
    if templates is None:
        templates = await ctx.reader.run(
            lambda: ctx.reads.resources(desired, caller.user, tasks, now)
        )
    ids = tuple(task.id for task in tasks)
    runs = ctx.state.runs
    last, statuses = await ctx.unchanged.read(
        ("run states", ids), lambda: (runs.last_run_at(ids), runs.task_statuses(ids))
    )
    zone = caller.user.timezone
    return [
        template.render(statuses[task.id], last.get(task.id), zone)
        for template, task in zip(templates, tasks, strict=True)
    ]


def _json_response(members: Mapping[str, str]) -> Response:
    # Answered as written: FastAPI would re-validate a returned model against the route's
    # response model, which costs a page more than building it.
    return Response(present.json_object(members), media_type="application/json")


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


def _author(caller: Caller) -> Author:
    return Author(name=caller.user.name, email=caller.user.email)


def _forget_unused(ctx: ApiContext, revision: str, keys: Sequence[str]) -> None:
    """Keys the written task no longer uses, unless another committed file still names them."""
    forget_unreferenced(ctx.engine.store, ctx.secrets, revision, keys)


def _prepared(
    ctx: ApiContext, caller: Caller, edit: Edit, respond: Callable[[DesiredState], T]
) -> Prepared[T]:
    """The writer's change for an edit: its secrets stored now (blocking: the prepare thread),
    the rest once it is committed."""
    if not edit.writes:
        return Prepared(respond=respond)
    if edit.parsed is not None:
        _check_secrets_decrypt(ctx, edit.parsed)
    for key, value in edit.secrets.items():
        ctx.secrets.put(key, value)
    stored = list(edit.secrets)

    def committed(revision: str) -> None:
        if edit.parsed is not None:
            ctx.engine.expect(edit.parsed)
        if edit.creates:
            ctx.state.task_id_counter.record_task_id(edit.task_id)
        if edit.unused:
            _forget_unused(ctx, revision, edit.unused)

    return Prepared(
        respond=respond,
        writes=edit.writes,
        author=_author(caller),
        message=edit.message,
        task_id=edit.task_id,
        rollback=lambda: ctx.secrets.forget(stored),
        committed=committed,
    )


def _check_secrets_decrypt(ctx: ApiContext, parsed: ParsedFile) -> None:
    """The reconcile refuses a file whose age-encrypted secrets do not decrypt: so does a write
    (the file's own `age:` references, which the API never writes but keeps as they are)."""
    errors: dict[str, list[str]] = {}
    for error in ctx.secrets.vet(parsed).errors:
        errors.setdefault(request_field(error.field), []).append(error.message)
    if errors:
        raise Invalid(errors)


def _respond_task(
    ctx: ApiContext, caller: Caller, edit: Edit
) -> Callable[[DesiredState], schemas.TaskResponse]:
    task = edit.task
    assert task is not None

    def respond(applied: DesiredState) -> schemas.TaskResponse:
        return schemas.TaskResponse(data=_written(ctx, caller, applied, task, edit.path))

    return respond
