"""Fetch and reconcile now: `POST /api/sync` (any valid token) and the git server's webhook."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from reconciler.api import schemas
from reconciler.api.auth import Caller, require
from reconciler.api.context import ApiContext, context
from reconciler.api.errors import ApiError, responses
from reconciler.api.hooks import authentic
from reconciler.api.tasks import sync_state

# Outside the token check (see RequestGuard's open paths): the git server signs it instead.
HOOK_PATH = "/api/hooks/git"
FETCHING = "Fetching now."
NO_WEBHOOK = "No webhook is configured: the daemon was started without --webhook-secret-file."
NOT_AUTHENTIC = (
    "The delivery is not signed with the webhook's secret: X-Hub-Signature-256 (GitHub, Gitea,"
    " Forgejo) or X-Gitlab-Token (GitLab) is missing or wrong."
)

router = APIRouter(prefix="/api")
Ctx = Annotated[ApiContext, Depends(context)]


@router.post(
    "/sync",
    operation_id="syncNow",
    response_model=schemas.SyncResponse,
    responses=responses(401, 429),
    summary="Fetch from the remote and reconcile now; the sync state once applied",
    tags=["sync"],
)
async def sync_now(ctx: Ctx, caller: Annotated[Caller, Depends(require(None))]) -> Any:
    ctx.sync_limiter.enforce(caller.user.id, ctx.clock.now(), "sync requests")
    if ctx.upstream is not None:
        await ctx.upstream.fetch()  # a failure is in the answer's `remote`
    else:
        await ctx.engine.sync()
    return await run_in_threadpool(sync_state, ctx, caller)


@router.post(
    HOOK_PATH.removeprefix("/api"),
    operation_id="receiveGitWebhook",
    status_code=202,
    response_model=schemas.Message,
    responses=responses(401, 404),
    summary="A push on the git server: fetch at once (signed, no token)",
    tags=["sync"],
)
async def git_webhook(request: Request, ctx: Ctx) -> schemas.Message:
    if ctx.webhook_secret is None or ctx.upstream is None:
        raise ApiError(404, NO_WEBHOOK)
    body = await request.body()  # bounded by RequestGuard
    if not authentic(request.headers, body, ctx.webhook_secret):
        raise ApiError(401, NOT_AUTHENTIC)
    ctx.upstream.wake()
    return schemas.Message(message=FETCHING)
