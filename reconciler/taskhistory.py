"""The history of each backup task: the commits that changed it, following its id between files.

A task is its id, not its file: a file renamed (or moved to another folder) with the same `id:`
is the same task, so its history goes on. The history is read from the branch's commits, a
person's and the API's alike, oldest first, keeping what the desired state keeps: which files
declare each id, the first of them holding it (a second file claiming an id is rejected while
the first holds it, so its commits are not the task's), and each task file's last version. A
file that does not read (broken YAML, over the size limit) keeps the id it declared before, as
its last good version stays in force; its commits are listed without fields.

Built from git on first use and then brought forward by each new head from the commits since
(a history rewrite builds it again), so a page costs a lookup however long the history is: see
bench/bench_history.py. It is memory only, rebuilt at each start; as cheap to keep as the
desired state (the last version of each task file).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from reconciler import documents
from reconciler.fielddiff import changed_fields
from reconciler.gitstore import CommitFiles, CommitInfo, GitStore

log = logging.getLogger("reconciler.taskhistory")

MAX_MESSAGE = 16 << 10
"""A commit message longer than this (16 Ki characters) is cut, saying so."""


class Change(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    RENAMED = "renamed"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One commit in a task's history: what it did to the task, and the fields it changed (the
    YAML's dotted paths; none when either version of the file does not read)."""

    commit: CommitInfo
    change: Change
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Version:
    """A task file's content at one commit: the id it declares (or, unreadable, declared
    before), and its data (None: it does not read as a mapping of fields)."""

    blob: str
    task_id: int | None
    data: Mapping[Any, Any] | None


@dataclass
class _Index:
    revision: str | None = None
    files: dict[str, _Version] = field(default_factory=dict)
    # The task files declaring each id, in the order they came to: the first one holds it.
    claims: dict[int, list[str]] = field(default_factory=dict)
    # Each id's entries, oldest first.
    entries: dict[int, list[HistoryEntry]] = field(default_factory=dict)

    def holder(self, task_id: int) -> str | None:
        paths = self.claims.get(task_id)
        return paths[0] if paths else None

    def apply(
        self,
        commit: CommitInfo,
        before: Mapping[str, _Version | None],
        after: Mapping[str, _Version | None],
    ) -> None:
        """One commit: its task files in its first parent and in itself (None: absent)."""
        known = {path: self.files.get(path) for path in after}
        ids = {
            version.task_id
            for versions in (before, after, known)
            for version in versions.values()
            if version is not None and version.task_id is not None
        }
        held = {task_id: self.holder(task_id) for task_id in ids}
        for path, new in after.items():
            self._move_claim(path, known[path], new)
            if new is None:
                self.files.pop(path, None)
            else:
                self.files[path] = new

        def data_before(path: str) -> Mapping[Any, Any] | None:
            version = before.get(path) if path in after else self.files.get(path)
            return None if version is None else version.data

        def data_after(path: str) -> Mapping[Any, Any] | None:
            version = self.files.get(path)
            return None if version is None else version.data

        for task_id in sorted(ids):
            was, now = held[task_id], self.holder(task_id)
            if was is None and now is None:
                continue
            if was is None:
                assert now is not None
                entry = (Change.CREATED, _fields({}, data_after(now)))
            elif now is None:
                entry = (Change.DELETED, _fields(data_before(was), {}))
            elif was != now:
                entry = (Change.RENAMED, _fields(data_before(was), data_after(now)))
            elif now in after:
                entry = (Change.UPDATED, _fields(data_before(was), data_after(now)))
            else:
                continue  # another file claiming the id changed; the task did not
            self.entries.setdefault(task_id, []).append(HistoryEntry(commit, *entry))

    def _move_claim(self, path: str, old: _Version | None, new: _Version | None) -> None:
        old_id = None if old is None else old.task_id
        new_id = None if new is None else new.task_id
        if old_id == new_id:
            return
        if old_id is not None:
            paths = self.claims[old_id]
            paths.remove(path)
            if not paths:
                del self.claims[old_id]
        if new_id is not None:
            self.claims.setdefault(new_id, []).append(path)


def _fields(before: Mapping[Any, Any] | None, after: Mapping[Any, Any] | None) -> tuple[str, ...]:
    return () if before is None or after is None else changed_fields(before, after)


def _is_task_file(path: str) -> bool:
    return documents.kind_of(path) is documents.Kind.TASK and not documents.is_ignored(path)


def _declared_id(data: Mapping[Any, Any] | None) -> int | None:
    value = None if data is None else data.get("id")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


class TaskHistory:
    """Thread-safe; every method blocks (git, YAML): call it from a worker thread."""

    def __init__(self, store: GitStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._index = _Index()
        self._stop = threading.Event()
        self._warming: threading.Thread | None = None

    @property
    def revision(self) -> str | None:
        """The head the history has been read up to (None: not read yet)."""
        return self._index.revision

    def warm(self, revision: str | None) -> None:
        """Read the history up to `revision` in a background thread, once, so that even the
        first page after a start is a lookup (0.8 s of reading at 2,000 commits)."""
        if self._warming is None:
            self._warming = threading.Thread(
                target=self._warm, args=(revision,), name="task-history", daemon=True
            )
            self._warming.start()

    def close(self) -> None:
        """Stop reading the history in the background (nothing is kept) and wait for it."""
        self._stop.set()
        if self._warming is not None:
            self._warming.join()

    def _warm(self, revision: str | None) -> None:
        try:
            with self._lock:
                self._follow(revision)
        except Exception:
            log.exception("reading the task history failed; the first history page reads it")

    def page(
        self, revision: str | None, task_id: int, offset: int, limit: int
    ) -> tuple[list[HistoryEntry], int]:
        """`limit` of the task's history entries at `revision`, newest first, from `offset`; and
        how many there are in all."""
        with self._lock:
            newer = self._follow(revision)
            entries = self._index.entries.get(task_id, [])
            if newer:
                entries = [entry for entry in entries if entry.commit.sha not in newer]
            total = len(entries)
            newest = total - offset  # the entries list is oldest first
            return [entries[i] for i in range(newest - 1, max(newest - limit, 0) - 1, -1)], total

    def _follow(self, revision: str | None) -> frozenset[str]:
        """Bring the index to `revision`; the commits of the index that `revision` does not
        have, when it is an ancestor of the index's head: a request that read the revision just
        before the head moved, or a branch reset back to it (a force-push). Their entries are
        a suffix of each task's, so leaving them out answers at `revision` without a re-read."""
        index = self._index
        if revision == index.revision:
            return frozenset()
        if revision is None:
            self._index = _Index()
            return frozenset()
        commits = (
            None if index.revision is None else self._store.commits_since(index.revision, revision)
        )
        if commits is None:
            if index.revision is not None and (
                newer := self._store.commits_since(revision, index.revision)
            ):
                return frozenset(newer)
            index, commits = _Index(), self._store.commits_since(None, revision) or []
        self._index = _Index()  # until the walk is done: a failure leaves no half-built index
        for commit in reversed(commits):
            if self._stop.is_set():
                return frozenset()
            self._apply(index, self._store.commit_files(commit))
        index.revision = revision
        self._index = index
        return frozenset()

    def _apply(self, index: _Index, changes: CommitFiles) -> None:
        files = {path: blobs for path, blobs in changes.files.items() if _is_task_file(path)}
        if not files:
            return
        known = index.files
        wanted = [
            blob
            for path, (old, new) in files.items()
            for blob in (old, new)
            if blob is not None and not _is_known(known.get(path), blob)
        ]
        texts = self._read(wanted)
        before: dict[str, _Version | None] = {}
        after: dict[str, _Version | None] = {}
        for path, (old, new) in files.items():
            previous = known.get(path)
            declared = None if previous is None else previous.task_id
            before[path] = _version(old, texts, previous, declared)
            parent = before[path]
            after[path] = _version(
                new, texts, previous, declared if parent is None else parent.task_id
            )
        index.apply(_bounded(changes.commit), before, after)

    def _read(self, blobs: Sequence[str]) -> dict[str, bytes | None]:
        """Each blob's content; None for one over the size limit (never read)."""
        sizes = self._store.blob_sizes(blobs)
        readable = [blob for blob in sizes if sizes[blob] <= documents.MAX_FILE_BYTES]
        texts: dict[str, bytes | None] = dict.fromkeys(blobs)
        texts.update(self._store.read_blobs(readable))
        return texts


def _bounded(commit: CommitInfo) -> CommitInfo:
    """The commit with its message cut to MAX_MESSAGE characters: a message is whatever its
    author's git wrote, and the history keeps every one in memory."""
    if len(commit.message) <= MAX_MESSAGE:
        return commit
    cut = (
        f"{commit.message[:MAX_MESSAGE]}\n[message cut: {len(commit.message):,} characters in all]"
    )
    return replace(commit, message=cut)


def _is_known(version: _Version | None, blob: str) -> bool:
    return version is not None and version.blob == blob


def _version(
    blob: str | None,
    texts: Mapping[str, bytes | None],
    known: _Version | None,
    declared_before: int | None,
) -> _Version | None:
    """A file's version from its blob (`known`, the index's version of the path, if it is that
    blob); one that declares no id keeps the one its path declared before."""
    if blob is None:
        return None
    if known is not None and known.blob == blob:
        return known
    text = texts[blob]
    raw = None if text is None else documents.read_yaml(text)
    data = raw.data if raw is not None and isinstance(raw.data, Mapping) else None
    declared = _declared_id(data)
    return _Version(blob, declared_before if declared is None else declared, data)
