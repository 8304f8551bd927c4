"""`create_app`: the API as a FastAPI application over the daemon's collaborators."""

from __future__ import annotations

from fastapi import FastAPI

from reconciler.api import errors, syncing, tasks
from reconciler.api.auth import Caller, identify
from reconciler.api.context import ApiContext, RateLimiter
from reconciler.api.docs import install_docs
from reconciler.api.guard import DEFAULT_MAX_BODY_BYTES, RequestGuard
from reconciler.api.ids import TaskIds
from reconciler.api.readcache import ReadCache
from reconciler.api.reader import StateReader
from reconciler.api.statuspage import install_status_page
from reconciler.api.tokenuse import TokenUses
from reconciler.api.unchanged import UnchangedReads
from reconciler.api.writer import Writer
from reconciler.engine import Engine
from reconciler.runner import Runner
from reconciler.secrets import Secrets
from reconciler.state import StateStore
from reconciler.state.tokens import TokenRecord
from reconciler.taskhistory import TaskHistory
from reconciler.types import Clock
from reconciler.upstream import Upstream


def create_app(
    engine: Engine,
    state: StateStore,
    secrets: Secrets,
    runner: Runner,
    clock: Clock,
    token_uses: TokenUses,
    reader: StateReader,
    *,
    push: bool = False,
    run_rate_limit: int = 5,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    history: TaskHistory,
    upstream: Upstream | None = None,
    webhook_secret: str | None = None,
) -> FastAPI:
    """The `/api` routes. `token_uses` notes each token's use (the caller writes it out);
    `reader` runs the state-store reads of requests (the caller closes it): a token check and a
    page's run states, when the store changed since they were last read;
    `push`: push every API commit to the branch's upstream.
    `upstream`: the remote followed (every API commit is published through it);
    `webhook_secret`: the secret `POST /api/hooks/git` checks (None: no webhook).

    `max_body_bytes` bounds every request body; `/api` requests need a valid token before any
    of their body is read. `history`: the tasks' history (the caller warms and closes it).
    """
    app = FastAPI(
        title="reconciler",
        summary="Backup tasks kept in a git repository of YAML files",
        version="1",
        # Served by `install_docs` from a bundled Swagger UI: FastAPI's own loads it from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    unchanged = UnchangedReads(state.changes, reader)

    async def find_token(plaintext: str) -> TokenRecord | None:
        return await unchanged.read(("token", plaintext), lambda: state.tokens.find(plaintext))

    async def who(authorization: str | None) -> Caller | None:
        return await identify(
            authorization, find_token, token_uses, engine.desired.users, clock.now()
        )

    ctx = ApiContext(
        engine=engine,
        state=state,
        secrets=secrets,
        runner=runner,
        clock=clock,
        writer=Writer(engine, state.idempotency, clock, push=push, upstream=upstream),
        run_limiter=RateLimiter(run_rate_limit),
        task_ids=TaskIds(engine.store),
        reads=ReadCache(engine.file_times),
        reader=reader,
        unchanged=unchanged,
        identify=who,
        history=history,
        upstream=upstream,
        webhook_secret=webhook_secret,
    )
    app.state.reconciler = ctx
    app.add_middleware(
        RequestGuard,
        identify=who,
        max_body_bytes=max_body_bytes,
        open_paths=frozenset({syncing.HOOK_PATH}),
    )
    errors.install(app)
    app.include_router(tasks.router)
    app.include_router(syncing.router)
    install_docs(app)
    install_status_page(app)
    return app
