"""The single writer: every API change to the config set goes through here, in groups.

Writes that arrive while a group is committing wait in a queue; the next group takes them all.
One group is: reconcile the branch head (so a person's latest commit is what we edit), let each
caller prepare file contents from that state (in a thread: parsing and rendering a large file
must not hold up other requests), commit them as a chain of commits, one per write with its own
author and message, with that head as the expected parent of the first (GitStore writes
atomically and leaves nothing behind on failure; the chain costs about one commit's disk syncs),
push if asked, and reconcile once before answering them all, so every response and every later
request already see the change.

Every write is answered as if it had been carried out alone: one whose preparation is refused
(404, 409, 422) or whose file cannot be committed fails alone, and the rest of its group goes
ahead. Two writes of one group never touch the same file or task (the later one waits for the
next group, prepared from the earlier one's commit), and each create is offered the ids that the
writes before it in the group took, so ids are never handed out twice.

If a person's commit moved the branch in between, the group is prepared again from the new head,
a bounded number of times: whole files are committed, so committing a stale preparation would
revert what the person changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Generic, TypeVar

from fastapi.responses import JSONResponse

from reconciler.api.errors import ApiError, Invalid
from reconciler.api.idempotency import HEADER, KEY_LIFETIME, KeyedRequest, earlier_answer
from reconciler.desired import DesiredState
from reconciler.engine import Engine
from reconciler.gitremote import GitConflictError, UntrustedUpstreamError, push
from reconciler.gitstore import (
    Author,
    BranchMovedError,
    Change,
    DirtyFileError,
    GitError,
    RefusedChangeError,
)
from reconciler.state.idempotency import IdempotencyKeys
from reconciler.types import Clock
from reconciler.upstream import Upstream

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


def _log_unseen_failure(answer: asyncio.Future[Any]) -> None:
    """The end of a write whose client went away: nobody else will see how it ended."""
    if answer.cancelled():
        return
    error = answer.exception()
    if isinstance(error, ApiError | Invalid):
        log.info("API write for a client that went away was refused: %s", error)
    elif error is not None:
        log.error("API write for a client that went away failed", exc_info=error)


@dataclass(frozen=True)
class Base:
    """What a change is prepared from: the applied desired state and the head it came from.

    `claimed_ids` are the task ids the writes before this one in its group take: a create picks
    its id above them too, as it would had those writes been committed first.
    """

    desired: DesiredState
    revision: str | None
    claimed_ids: frozenset[int] = frozenset()


@dataclass(eq=False)
class _Pending:
    """A queued write: how to prepare it, and where its answer goes."""

    prepare: Callable[[Base], Prepared[Any]]
    keyed: KeyedRequest | None
    answer: asyncio.Future[Any]
    # Preparations that a moved branch made stale.
    attempts: int = 0

    def fail(self, error: BaseException) -> None:
        if not self.answer.done():
            self.answer.set_exception(error)

    def succeed(self, answer: Any) -> None:
        if not self.answer.done():
            self.answer.set_result(answer)


@dataclass(frozen=True)
class _Ready:
    """A write prepared for the chain."""

    pending: _Pending
    prepared: Prepared[Any]


@dataclass
class _Group:
    """A group's writes once prepared: the chain to commit, those that touch what an earlier one
    in the chain does (for the next group), and the answers of those refused or with nothing to
    commit."""

    chain: list[_Ready] = field(default_factory=list)
    later: list[_Ready] = field(default_factory=list)
    answered: list[tuple[_Pending, Any, Exception | None]] = field(default_factory=list)


def _prepare_group(todo: list[_Pending], desired: DesiredState, revision: str | None) -> _Group:
    """Each write prepared from the same head, in order; blocking."""
    group = _Group()
    paths: set[str] = set()
    claimed: set[int] = set()
    for pending in todo:
        try:
            prepared = pending.prepare(Base(desired, revision, frozenset(claimed)))
            if not prepared.writes:
                group.answered.append((pending, prepared.respond(desired), None))
                continue
        except Exception as exc:
            group.answered.append((pending, None, exc))
            continue
        entry = _Ready(pending, prepared)
        if paths.intersection(prepared.writes) or prepared.task_id in claimed:
            # Prepared without the earlier write's change, it would undo it when committed.
            group.later.append(entry)
        else:
            paths.update(prepared.writes)
            if prepared.task_id is not None:
                claimed.add(prepared.task_id)
            group.chain.append(entry)
    return group


def _outcomes(calls: Sequence[Callable[[], Any]]) -> list[tuple[Any, BaseException | None]]:
    """Each call's result or exception, in one thread hop for the lot; blocking."""
    results: list[tuple[Any, BaseException | None]] = []
    for call in calls:
        try:
            results.append((call(), None))
        except Exception as exc:
            results.append((None, exc))
    return results


class Writer:
    def __init__(
        self,
        engine: Engine,
        keys: IdempotencyKeys,
        clock: Clock,
        *,
        push: bool,
        upstream: Upstream | None = None,
    ) -> None:
        """`upstream`: the remote the daemon follows; every commit is published through it."""
        self._engine = engine
        self._keys = keys
        self._clock = clock
        self._push = push
        self._upstream = upstream
        self._queue: list[_Pending] = []
        self._drainer: asyncio.Task[None] | None = None

    async def write(
        self, prepare: Callable[[Base], Prepared[T]], keyed: KeyedRequest | None = None
    ) -> T | JSONResponse:
        """Carry out one change; a client that goes away does not interrupt it.

        Once a write has been queued it runs to its end (commit, secrets, answer stored) even if
        the request is cancelled: stopping half-way could leave a commit that refers to a secret
        its rollback deleted.
        """
        pending = _Pending(prepare, keyed, asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="api-writes")
        try:
            answer: T | JSONResponse = await asyncio.shield(pending.answer)
        except asyncio.CancelledError:
            pending.answer.add_done_callback(_log_unseen_failure)
            raise
        return answer

    @property
    def queued(self) -> int:
        """Writes waiting for the next group."""
        return len(self._queue)

    async def _drain(self) -> None:
        """Carry out queued writes, a group at a time, until none is left."""
        while self._queue:
            group: list[_Pending] = []
            try:
                # Writes that arrive during this reconcile still join the group.
                await self._engine.sync()
                group, self._queue = self._queue, []
                await self._write_group(group)
            except BaseException as exc:
                # A reconcile or commit that failed outright fails the writes it left unanswered.
                if not group:  # the reconcile before the group: those waiting for it
                    group, self._queue = self._queue, []
                waiting = set(self._queue)
                for pending in group:
                    if pending.answer.done() or pending in waiting:
                        continue
                    if isinstance(exc, Exception):
                        pending.fail(exc)
                    else:
                        pending.answer.cancel()
                if not isinstance(exc, Exception):
                    raise

    def _defer(self, pendings: Sequence[_Pending]) -> None:
        """To the next group, in their order, ahead of the writes that came after them."""
        self._queue[:0] = pendings

    async def _write_group(self, group: list[_Pending]) -> None:
        todo = await self._unanswered(group)
        while todo:
            await self._engine.sync()
            if (refusal := self._engine.write_refusal()) is not None:
                for pending in todo:
                    pending.fail(ApiError(409, refusal))
                return
            chain = await self._prepare_chain(todo)
            todo = []
            if not chain:
                return
            base_revision, ready = chain
            landed = await self._commit_chain(ready, base_revision)
            if landed is None:  # the branch moved: prepare the rest again from the new head
                todo = [entry.pending for entry in ready if not entry.pending.answer.done()]
                continue
            await self._finish(landed)

    async def _unanswered(self, group: list[_Pending]) -> list[_Pending]:
        """The writes to carry out: a retried key's earlier answer is given instead."""
        todo: list[_Pending] = []
        retries: list[_Pending] = []
        keys: set[tuple[int, str]] = set()
        for pending in group:
            keyed = pending.keyed
            if keyed is None:
                todo.append(pending)
                continue
            if (keyed.user_id, keyed.key) in keys:
                # A retry racing its first attempt: answered once that one is committed.
                retries.append(pending)
                continue
            keys.add((keyed.user_id, keyed.key))
            try:
                earlier = await asyncio.to_thread(
                    earlier_answer,
                    keyed,
                    self._keys,
                    self._engine.store,
                    self._engine.desired,
                    self._engine.revision,
                    self._clock.now(),
                )
            except Exception as exc:
                pending.fail(exc)
                continue
            if earlier is None:
                todo.append(pending)
            else:
                pending.succeed(earlier)
        self._defer(retries)
        return todo

    async def _prepare_chain(self, todo: list[_Pending]) -> tuple[str | None, list[_Ready]] | None:
        """Each write prepared from the applied head; those with nothing to commit (or refused)
        are answered here. None when nothing is left to commit."""
        desired, revision = self._engine.desired, self._engine.revision

        group = await asyncio.to_thread(_prepare_group, todo, desired, revision)
        for pending, answer, error in group.answered:
            if error is None:
                pending.succeed(answer)
            else:
                pending.fail(error)
        if group.later:
            await self._rollback(group.later)
            self._defer([entry.pending for entry in group.later])
        return (revision, group.chain) if group.chain else None

    async def _rollback(self, entries: Sequence[_Ready]) -> None:
        for (_, error), entry in zip(
            await asyncio.to_thread(_outcomes, [entry.prepared.rollback for entry in entries]),
            entries,
            strict=True,
        ):
            if error is not None:
                log.error("cannot undo %s", entry.prepared.message, exc_info=error)

    async def _commit_chain(
        self, ready: list[_Ready], revision: str | None
    ) -> list[tuple[_Ready, str]] | None:
        """Each write with the commit it landed in; None if the branch moved since `revision`
        (nothing was written, and writes out of attempts are answered)."""
        while ready:
            now = self._clock.now()
            changes = [_change(entry, now) for entry in ready]
            try:
                shas = await asyncio.to_thread(
                    self._engine.store.commit_chain, changes, parent=revision
                )
            except RefusedChangeError as refused:
                entry = ready.pop(refused.index)
                await self._rollback([entry])
                log.warning("%s not committed: %s", entry.prepared.message, refused.error)
                entry.pending.fail(_not_committed(refused.error))
                continue
            except BranchMovedError:
                await self._rollback(ready)
                for entry in ready:
                    log.info(
                        "the branch moved while %r was prepared; preparing it again",
                        entry.prepared.message,
                    )
                    entry.pending.attempts += 1
                    if entry.pending.attempts >= _PREPARE_ATTEMPTS:
                        entry.pending.fail(
                            ApiError(
                                409,
                                "Nothing was written: the branch kept moving while this change"
                                f" was prepared ({_PREPARE_ATTEMPTS} attempts). Try again.",
                            )
                        )
                return None
            except GitError as exc:
                await self._rollback(ready)
                log.warning("%d change(s) not committed: %s", len(ready), exc)
                for entry in ready:
                    entry.pending.fail(_not_committed(exc))
                return []
            except asyncio.CancelledError:
                # The commit thread may still land: its secrets stay; the start-up sweep removes
                # them if it did not.
                raise
            except BaseException as exc:
                await self._rollback(ready)
                for entry in ready:
                    entry.pending.fail(exc)
                raise
            return list(zip(ready, shas, strict=True))
        return []

    async def _finish(self, landed: list[tuple[_Ready, str]]) -> None:
        """After the chain's commit: clean up after each write, push, reconcile once, answer."""
        if not landed:
            return
        for entry, sha in landed:
            log.info("committed %s: %s", sha[:12], entry.prepared.message)
        cleaned = await asyncio.to_thread(
            _outcomes, [partial(entry.prepared.committed, sha) for entry, sha in landed]
        )
        for (entry, sha), (_, error) in zip(landed, cleaned, strict=True):
            if error is not None:  # the change is committed: cleaning up must not undo the answer
                log.error("after commit %s (%s)", sha[:12], entry.prepared.message, exc_info=error)
        not_pushed = await self._push_branch(landed[-1][1])
        await self._engine.sync()
        if not_pushed is not None:
            for entry, sha in landed:
                entry.pending.fail(ApiError(409, not_pushed(sha)))
            return
        desired = self._engine.desired
        answers = await asyncio.to_thread(
            _outcomes, [partial(entry.prepared.respond, desired) for entry, _ in landed]
        )
        for (entry, _), (answer, error) in zip(landed, answers, strict=True):
            if error is not None:
                entry.pending.fail(error)
                continue
            if entry.pending.keyed is not None:
                await self._remember(entry.pending.keyed, answer)
            entry.pending.succeed(answer)

    async def _remember(self, keyed: KeyedRequest, answer: Any) -> None:
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

    async def _push_branch(self, tip: str) -> Callable[[str], str] | None:
        """None once pushed (or when not pushing); else why the push failed, for a commit."""
        if self._upstream is not None:
            return await self._publish(self._upstream, tip)
        if not self._push:
            return None
        store, trust = self._engine.store, self._engine.trust
        distrust = None if trust is None else trust.distrust
        try:
            await asyncio.to_thread(partial(push, store.root, sign=store.signer, distrust=distrust))
        except UntrustedUpstreamError as exc:
            log.warning("commit %s not pushed: %s", tip[:12], exc)
            return _untrusted_upstream(str(exc))
        except GitConflictError as exc:
            log.warning("commit %s not pushed: %s", tip[:12], exc)
            return lambda sha: (
                f"Committed locally as {sha[:12]} but not pushed: the upstream branch has"
                " conflicting changes to the same lines. Nothing was lost; the commit waits on"
                " the daemon's branch to be merged by hand."
            )
        except GitError as exc:
            log.warning("commit %s not pushed: %s", tip[:12], exc)
            return lambda sha: (
                f"Committed locally as {sha[:12]} but not pushed: the push to the upstream"
                " failed (the daemon's log has git's output)."
            )
        return None

    async def _publish(self, upstream: Upstream, tip: str) -> Callable[[str], str] | None:
        """`_push_branch` for a followed remote: a person's commit there wins, ours is kept."""
        try:
            followed = await upstream.publish()
        except UntrustedUpstreamError as exc:
            log.warning("commit %s not pushed: %s", tip[:12], exc)
            return _untrusted_upstream(str(exc))
        except GitError as exc:
            log.warning("commit %s not pushed: %s", tip[:12], exc)
            return lambda sha: (
                f"Committed locally as {sha[:12]} but not pushed: the push to the remote failed"
                " (GET /api/sync says why). The daemon pushes it with its next fetch, unless a"
                " commit on the remote conflicts with it: then the remote wins and it is kept on"
                " a ref under refs/reconciler/ (GET /api/sync lists them)."
            )
        kept = followed.set_aside
        if kept is None or tip not in kept.commits:
            return None
        return lambda sha: (
            "Not applied: a commit on the remote changed the same lines meanwhile, and the"
            f" remote wins. Nothing was lost: this change is commit {sha[:12]}, kept on"
            f" {kept.ref} in the daemon's repository. Try again against the new version."
        )


def _untrusted_upstream(reason: str) -> Callable[[str], str]:
    return lambda sha: (
        f"Committed locally as {sha[:12]} but not pushed: {reason}. Nothing was lost: it runs"
        " and waits on the daemon's branch, and is pushed once the remote's head is a commit"
        " signed by an allowed key."
    )


def _change(entry: _Ready, now: datetime) -> Change:
    prepared, keyed = entry.prepared, entry.pending.keyed
    assert prepared.author is not None
    message = prepared.message
    if keyed is not None:
        message = f"{message}\n\n{keyed.trailers(prepared.task_id)}"
    return Change(prepared.writes, prepared.author, message, now)


def _not_committed(error: GitError | ValueError) -> BaseException:
    """What the client is told; a ValueError (a bug: the API checks authors) stays a 500."""
    if isinstance(error, GitError):
        return ApiError(409, _NOT_COMMITTED[isinstance(error, DirtyFileError)])
    return error
