"""The collaborators every route needs, carried on the app (never in globals)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from fastapi import Request

from reconciler.api.auth import Caller
from reconciler.api.errors import ApiError
from reconciler.api.ids import TaskIds
from reconciler.api.readcache import ReadCache
from reconciler.api.reader import StateReader
from reconciler.api.unchanged import UnchangedReads
from reconciler.api.writer import Writer
from reconciler.engine import Engine
from reconciler.runner import Runner
from reconciler.secrets import Secrets
from reconciler.state import StateStore
from reconciler.taskhistory import TaskHistory
from reconciler.types import Clock
from reconciler.upstream import Upstream


@dataclass
class RateLimiter:
    """At most `limit` hits per `window` per key, over a sliding window of the injected clock."""

    limit: int
    window: timedelta = timedelta(minutes=1)
    _hits: dict[int, deque[datetime]] = field(default_factory=dict)

    def hit(self, key: int, now: datetime) -> timedelta | None:
        """Record a hit; None if allowed, else how long until the next one would be."""
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return hits[0] + self.window - now
        hits.append(now)
        return None

    def enforce(self, key: int, now: datetime, what: str) -> None:
        """`hit`, refusing with a 429 (and Retry-After) past the limit; `what` names the
        requests in its message (`run requests`)."""
        wait = self.hit(key, now)
        if wait is not None:
            seconds = max(1, math.ceil(wait.total_seconds()))
            raise ApiError(
                429,
                f"Too many {what}: at most {self.limit} a minute. Try again in {seconds} seconds.",
                {"Retry-After": str(seconds)},
            )


@dataclass
class ApiContext:
    engine: Engine
    state: StateStore
    secrets: Secrets
    runner: Runner
    clock: Clock
    writer: Writer
    run_limiter: RateLimiter
    task_ids: TaskIds
    reads: ReadCache
    reader: StateReader
    unchanged: UnchangedReads
    # The caller an Authorization header names (None: refused): the one token check, for the
    # request guard and for the status page's cookie alike.
    identify: Callable[[str | None], Awaitable[Caller | None]]
    history: TaskHistory
    # Following a remote (`serve --remote`): None when the daemon follows none.
    upstream: Upstream | None = None
    sync_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(10))
    # The webhook's shared secret; None: no webhook (404).
    webhook_secret: str | None = field(default=None, repr=False)


# Async: a plain function would be called in a worker thread, one more hop on every request.
async def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.reconciler
    return ctx
