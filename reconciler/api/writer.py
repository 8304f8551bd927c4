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
from typing import Generic, TypeVar

from reconciler.api.errors import ApiError
from reconciler.desired import DesiredState
from reconciler.engine import Engine
from reconciler.gitstore import (
    Author,
    BranchMovedError,
    DirtyFileError,
    GitConflictError,
    GitError,
)
from reconciler.types import Clock

log = logging.getLogger("reconciler.api")

T = TypeVar("T")

_PREPARE_ATTEMPTS = 5


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Prepared(Generic[T]):
    """A change ready to commit, and how to answer once it is applied.

    `writes` maps config-set-relative paths to new contents (None deletes); empty means nothing
    to commit. `rollback` undoes side effects made while preparing (secrets stored) when the
    commit fails; `committed` runs once it succeeded (secrets no longer referenced).
    """

    respond: Callable[[DesiredState], T]
    writes: Mapping[str, bytes | None] = field(default_factory=dict)
    author: Author | None = None
    message: str = ""
    rollback: Callable[[], None] = _nothing
    committed: Callable[[], None] = _nothing


@dataclass(frozen=True)
class Base:
    """What a change is prepared from: the applied desired state and the head it came from."""

    desired: DesiredState
    revision: str | None


class Writer:
    def __init__(self, engine: Engine, clock: Clock, *, push: bool) -> None:
        self._engine = engine
        self._clock = clock
        self._push = push
        self._lock = asyncio.Lock()

    async def write(self, prepare: Callable[[Base], Prepared[T]]) -> T:
        async with self._lock:
            for _ in range(_PREPARE_ATTEMPTS):
                await self._engine.sync()
                base = Base(self._engine.desired, self._engine.revision)
                prepared = await asyncio.to_thread(prepare, base)
                if not prepared.writes:
                    return prepared.respond(self._engine.desired)
                sha = await self._commit(prepared, base)
                if sha is not None:
                    break
            else:
                raise ApiError(
                    409,
                    "Nothing was written: the branch kept moving while this change was prepared"
                    f" ({_PREPARE_ATTEMPTS} attempts). Try again.",
                )
            prepared.committed()
            log.info("committed %s: %s", sha[:12], prepared.message)
            pushed = await self._push_commit(sha)
            await self._engine.sync()
            if pushed is not None:
                raise ApiError(409, pushed)
            return prepared.respond(self._engine.desired)

    async def _commit(self, prepared: Prepared[T], base: Base) -> str | None:
        """The new commit's sha; None if the branch moved since `base` (nothing was written)."""
        assert prepared.author is not None
        try:
            return await asyncio.to_thread(
                self._engine.store.commit,
                prepared.writes,
                prepared.author,
                prepared.message,
                self._clock.now(),
                parent=base.revision,
            )
        except BranchMovedError:
            prepared.rollback()
            log.info("the branch moved while %r was prepared; preparing it again", prepared.message)
            return None
        except DirtyFileError as exc:
            prepared.rollback()
            log.warning("%s not committed: %s", prepared.message, exc)
            raise ApiError(
                409,
                "Nothing was written: the file has uncommitted local changes in the daemon's"
                " repository; commit or discard them there first.",
            ) from exc
        except GitError as exc:
            prepared.rollback()
            log.warning("%s not committed: %s", prepared.message, exc)
            raise ApiError(
                409,
                "Nothing was written: the change could not be committed to the configuration"
                " repository (the daemon's log says why).",
            ) from exc
        except BaseException:
            prepared.rollback()
            raise

    async def _push_commit(self, sha: str) -> str | None:
        """None once pushed (or when not pushing); else why the push failed."""
        if not self._push:
            return None
        try:
            await asyncio.to_thread(self._engine.store.push)
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
