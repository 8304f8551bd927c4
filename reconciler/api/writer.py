"""The single writer: every API change to the config set goes through here, one at a time.

One write is: reconcile the branch head (so a person's latest commit is what we edit), let the
caller prepare file contents from that state (in a thread: parsing and rendering a large file must
not hold up other requests), commit them with that head as the expected parent (GitStore writes
atomically and leaves nothing behind on failure), push if asked, and reconcile again before
answering, so the response and every later request already see the change.

If a person's commit moved the branch in between, the change is prepared again from the new head,
a bounded number of times: whole files are committed, so committing a stale preparation would
revert what the person changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fastapi.responses import JSONResponse

from reconciler.api.errors import ApiError, Invalid
from reconciler.api.idempotency import HEADER, KEY_LIFETIME, KeyedRequest, earlier_answer
from reconciler.desired import DesiredState
from reconciler.engine import Engine
from reconciler.gitremote import GitConflictError, push
from reconciler.gitstore import Author, BranchMovedError, DirtyFileError, GitError
from reconciler.state.idempotency import IdempotencyKeys
from reconciler.types import Clock

log = logging.getLogger("reconciler.api")

T = TypeVar("T")

_PREPARE_ATTEMPTS = 5
# What a client is told when a commit fails, by whether the file had local changes; the detail
# (paths on this host, git's own words) goes to the log only.
_NOT_COMMITTED = {
    True: "Nothing was written: the file has uncommitted local changes in the daemon's"
    " repository; commit or discard them there first.",
    False: "Nothing was written: the change could not be committed to the configuration"
    " repository (the daemon's log says why).",
}


def _nothing() -> None:
    return None


def _nothing_after(_sha: str) -> None:
    return None


@dataclass(frozen=True)
class Prepared(Generic[T]):
    """A change ready to commit, and how to answer once it is applied.

    `writes` maps config-set-relative paths to new contents (None deletes); empty means nothing
    to commit. `rollback` undoes side effects made while preparing (secrets stored) when the
    commit fails; `committed` runs (in a thread) with the new commit once it succeeded (secrets
    no longer referenced). `task_id` is the task the change is about.
    """

    respond: Callable[[DesiredState], T]
    writes: Mapping[str, bytes | None] = field(default_factory=dict)
    author: Author | None = None
    message: str = ""
    task_id: int | None = None
    rollback: Callable[[], None] = _nothing
    committed: Callable[[str], None] = _nothing_after


def _log_unseen_failure(task: asyncio.Task[Any]) -> None:
    """The end of a write whose client went away: nobody else will see how it ended."""
    if task.cancelled():
        return
    error = task.exception()
    if isinstance(error, ApiError | Invalid):
        log.info("API write for a client that went away was refused: %s", error)
    elif error is not None:
        log.error("API write for a client that went away failed", exc_info=error)


@dataclass(frozen=True)
class Base:
    """What a change is prepared from: the applied desired state and the head it came from."""

    desired: DesiredState
    revision: str | None


class Writer:
    def __init__(self, engine: Engine, keys: IdempotencyKeys, clock: Clock, *, push: bool) -> None:
        self._engine = engine
        self._keys = keys
        self._clock = clock
        self._push = push
        self._lock = asyncio.Lock()
        self._in_flight: set[asyncio.Task[Any]] = set()

    async def write(
        self, prepare: Callable[[Base], Prepared[T]], keyed: KeyedRequest | None = None
    ) -> T | JSONResponse:
        """Carry out one change; a client that goes away does not interrupt it.

        Once a write has started it runs to its end (commit, secrets, answer stored) even if the
        request is cancelled: stopping half-way could leave a commit that refers to a secret its
        rollback deleted.
        """
        serialised = self._serialised(prepare, keyed)  # apart, so mypy infers T from `prepare`
        task = asyncio.create_task(serialised)
        self._in_flight.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._in_flight.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_log_unseen_failure)
            raise

    async def _serialised(
        self, prepare: Callable[[Base], Prepared[T]], keyed: KeyedRequest | None
    ) -> T | JSONResponse:
        async with self._lock:
            if keyed is not None:
                await self._engine.sync()
                earlier = await asyncio.to_thread(
                    earlier_answer,
                    keyed,
                    self._keys,
                    self._engine.store,
                    self._engine.desired,
                    self._engine.revision,
                    self._clock.now(),
                )
                if earlier is not None:
                    return earlier
            answer = await self._write(prepare, keyed)
            if keyed is not None:
                now = self._clock.now()
                try:
                    await asyncio.to_thread(
                        self._keys.store_response,
                        keyed.user_id,
                        keyed.key,
                        keyed.stored(answer, now),
                        forget_before=now - KEY_LIFETIME,
                    )
                except Exception:  # the commit's trailer still answers a retry
                    log.exception("cannot remember the answer to %s", HEADER)
            return answer

    async def _write(self, prepare: Callable[[Base], Prepared[T]], keyed: KeyedRequest | None) -> T:
        for _ in range(_PREPARE_ATTEMPTS):
            await self._engine.sync()
            base = Base(self._engine.desired, self._engine.revision)
            prepared = await asyncio.to_thread(prepare, base)
            if not prepared.writes:
                return await asyncio.to_thread(prepared.respond, base.desired)
            sha = await self._commit(prepared, base, keyed)
            if sha is not None:
                break
        else:
            raise ApiError(
                409,
                "Nothing was written: the branch kept moving while this change was prepared"
                f" ({_PREPARE_ATTEMPTS} attempts). Try again.",
            )
        log.info("committed %s: %s", sha[:12], prepared.message)
        try:
            await asyncio.to_thread(prepared.committed, sha)
        except Exception:  # the change is committed: cleaning up after it must not undo the answer
            log.exception("after commit %s (%s)", sha[:12], prepared.message)
        pushed = await self._push_commit(sha)
        await self._engine.sync()
        if pushed is not None:
            raise ApiError(409, pushed)
        return await asyncio.to_thread(prepared.respond, self._engine.desired)

    async def _commit(
        self, prepared: Prepared[T], base: Base, keyed: KeyedRequest | None
    ) -> str | None:
        """The new commit's sha; None if the branch moved since `base` (nothing was written)."""
        assert prepared.author is not None
        message = prepared.message
        if keyed is not None:
            message = f"{message}\n\n{keyed.trailers(prepared.task_id)}"
        try:
            return await asyncio.to_thread(
                self._engine.store.commit,
                prepared.writes,
                prepared.author,
                message,
                self._clock.now(),
                parent=base.revision,
            )
        except BranchMovedError:
            await asyncio.to_thread(prepared.rollback)
            log.info("the branch moved while %r was prepared; preparing it again", prepared.message)
            return None
        except GitError as exc:
            await asyncio.to_thread(prepared.rollback)
            log.warning("%s not committed: %s", prepared.message, exc)
            raise ApiError(409, _NOT_COMMITTED[isinstance(exc, DirtyFileError)]) from exc
        except asyncio.CancelledError:
            # The commit thread may still land: its secrets stay; the start-up sweep removes them
            # if it did not.
            raise
        except BaseException:
            await asyncio.to_thread(prepared.rollback)
            raise

    async def _push_commit(self, sha: str) -> str | None:
        """None once pushed (or when not pushing); else why the push failed."""
        if not self._push:
            return None
        try:
            await asyncio.to_thread(push, self._engine.store.root)
        except GitConflictError as exc:
            log.warning("commit %s not pushed: %s", sha[:12], exc)
            return (
                f"Committed locally as {sha[:12]} but not pushed: the upstream branch has"
                " conflicting changes to the same lines. Nothing was lost; the commit waits on"
                " the daemon's branch to be merged by hand."
            )
        except GitError as exc:
            log.warning("commit %s not pushed: %s", sha[:12], exc)
            return (
                f"Committed locally as {sha[:12]} but not pushed: the push to the upstream"
                " failed (the daemon's log has git's output)."
            )
        return None
