"""Following the team's git server: fetch on a timer or when woken, then reconcile.

The daemon's repository is its own clone of the remote (`gitremote.ensure_clone`). Every
`interval` seconds, and at once when woken (a webhook, `POST /api/sync`), it fetches the branch
and brings ours to its head (`gitremote.follow`, in a thread: git's network I/O never runs on
the event loop), then reconciles through the engine, the same path as any other commit. API
commits are published through the same step, so a fetch and a push never interleave.

A fetch that fails (server down, authentication) moves nothing: the last good revision keeps
running, and the failure is kept in `status` for `/api/sync` and the metrics, and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from pathlib import Path

from reconciler.engine import Engine
from reconciler.gitremote import (
    Followed,
    SetAside,
    UntrustedUpstreamError,
    follow,
    redact,
    scrub,
)
from reconciler.gitstore import GitError
from reconciler.types import Clock

log = logging.getLogger("reconciler.upstream")


@dataclass(frozen=True)
class RemoteStatus:
    """The remote as the daemon last saw it. `url` carries no credentials."""

    url: str
    branch: str
    last_fetch_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    fetches: int = 0
    failures: int = 0
    set_aside: tuple[SetAside, ...] = ()


class Upstream:
    def __init__(
        self, *, engine: Engine, clock: Clock, url: str, branch: str, interval: float
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._url = url
        self._branch = branch
        self._interval = interval
        self._lock = asyncio.Lock()
        self._woken = asyncio.Event()
        self.status = RemoteStatus(url=redact(url), branch=branch)

    @property
    def root(self) -> Path:
        return self._engine.store.root

    def wake(self) -> None:
        """Fetch now, without waiting for it (the webhook's way)."""
        self._woken.set()

    async def run(self) -> None:
        """Fetch at once, then every `interval` seconds or when woken, until cancelled."""
        while True:
            self._woken.clear()
            await self.fetch()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self._interval)

    async def fetch(self) -> None:
        """Fetch, follow and reconcile now; a failure is recorded (and logged), never raised."""
        try:
            await self.publish()
        except GitError:
            return  # recorded and logged by publish
        try:
            await self._engine.sync()
        except Exception:
            log.exception("reconcile failed; the running schedule is unchanged")

    async def publish(self) -> Followed:
        """Fetch, bring our branch onto the remote's and push our commits (see
        `gitremote.follow`); GitError, recorded in `status`, when that fails."""
        async with self._lock:
            now = self._clock.now()
            try:
                store, trust = self._engine.store, self._engine.trust
                followed = await asyncio.to_thread(
                    partial(
                        follow,
                        store.root,
                        self._branch,
                        now,
                        sign=store.signer,
                        distrust=None if trust is None else trust.distrust,
                    )
                )
            except Exception as exc:  # whatever went wrong, the last good revision runs on
                error = scrub(str(exc) or type(exc).__name__, self._url)
                if self.status.last_error != error:
                    log.warning(
                        "syncing with %s failed; the last good revision keeps running: %s",
                        self.status.url,
                        error,
                    )
                self.status = replace(
                    self.status,
                    last_fetch_at=now,
                    last_error=error,
                    fetches=self.status.fetches + 1,
                    failures=self.status.failures + 1,
                )
                # An untrusted head stays one: a writer says so rather than "the push failed".
                kind = (
                    UntrustedUpstreamError if isinstance(exc, UntrustedUpstreamError) else GitError
                )
                raise kind(error) from exc
            if self.status.last_error is not None:
                log.info("syncing with %s works again", self.status.url)
            self._report(followed)
            self.status = replace(
                self.status,
                last_fetch_at=now,
                last_success_at=now,
                last_error=None,
                fetches=self.status.fetches + 1,
                set_aside=self.status.set_aside
                + ((followed.set_aside,) if followed.set_aside else ()),
            )
            return followed

    def _report(self, followed: Followed) -> None:
        if followed.rewritten:
            log.warning(
                "the history of %s on %s was rewritten (force-pushed); following it to %s",
                self._branch,
                self.status.url,
                followed.head[:12],
            )
        if followed.set_aside is not None:
            kept = followed.set_aside
            log.warning(
                "%d commit(s) of ours no longer apply to %s and were not pushed; they are kept"
                " on %s (%s)",
                len(kept.commits),
                kept.upstream[:12],
                kept.ref,
                kept.reason,
            )
        if followed.pushed:
            log.info("pushed %s to %s", followed.head[:12], self.status.url)
        elif followed.head != followed.before:
            log.info("fetched %s from %s", followed.head[:12], self.status.url)
