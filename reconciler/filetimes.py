"""The file-time index: when each config file was created and last changed, kept per commit.

Walking git history for a task list's `created_at`/`updated_at` costs the length of the history
(8.8 s at 1,249 commits). The index lives in the state store instead and is brought forward by
each reconcile from the commits it has not seen yet, so its cost follows what changed, and a
lookup costs the same at 10 and at 10,000 commits. It is observed state: when it is missing (a
new or deleted state store) or describes a history the branch no longer has (a reset), it is
rebuilt from git in a background thread, and until then lookups walk git for just the paths asked
(correct, as slow as before). Times follow `GitStore.file_times`: like `git log -- path`, a merge
that kept one parent's version changed nothing, and a rename creates a new file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from reconciler.gitstore import FileChanges, GitStore
from reconciler.state.filetimes import IndexedFileTimes, StoredFileTimes

log = logging.getLogger("reconciler.filetimes")

Times = tuple[datetime, datetime]


def fold_changes(
    changes: Iterable[FileChanges],
) -> tuple[dict[str, datetime], dict[str, datetime], set[str]]:
    """(last change, creation, paths removed) of each path over commits given newest first:
    the newest change counts, and the oldest creation (a file deleted and added again keeps its
    first creation, as `git log -- path` shows it)."""
    updated: dict[str, datetime] = {}
    created: dict[str, datetime] = {}
    removed: set[str] = set()
    for change in changes:
        for path in change.changed:
            updated.setdefault(path, change.time)
        for path in change.added:
            created[path] = change.time
        removed.update(change.removed)
    return updated, created, removed


def merge_rows(
    updated: Mapping[str, datetime],
    created: Mapping[str, datetime],
    touched: Iterable[str],
    present: set[str],
    known: Mapping[str, IndexedFileTimes],
) -> dict[str, IndexedFileTimes]:
    """The index rows of `touched` paths after newer commits, over the `known` rows."""
    rows: dict[str, IndexedFileTimes] = {}
    for path in touched:
        old = known.get(path)
        last = updated.get(path, old.updated if old is not None else None)
        if last is None:
            continue  # removed, and never seen as a file: nothing to remember
        first = old.created if old is not None else created.get(path, last)
        rows[path] = IndexedFileTimes(first, last, path in present)
    return rows


class FileTimesIndex:
    def __init__(self, store: GitStore, stored: StoredFileTimes) -> None:
        self._store = store
        self._stored = stored
        self._lock = threading.Lock()  # one writer of the index at a time, in this process
        self._rebuilding: threading.Thread | None = None
        self._wanted: str | None = None
        self._stop = threading.Event()

    @property
    def rebuilding(self) -> bool:
        return self._rebuilding is not None

    def follow(self, head: str | None) -> None:
        """Bring the index to `head`: from the commits since its revision, or by starting a
        rebuild in the background. Blocking (git and the state store): the reconcile thread's."""
        if head is None:
            return
        with self._lock:
            self._wanted = head
            if self._rebuilding is not None:
                return  # the rebuild catches up with `_wanted` when it is done
            indexed = self._stored.file_times_revision()
            if indexed == head:
                return
            commits = None if indexed is None else self._store.commits_since(indexed, head)
            if commits is None or indexed is None:
                self._rebuilding = threading.Thread(
                    target=self._rebuild, name="file-times-rebuild", daemon=True
                )
                self._rebuilding.start()
                return
            self._advance(indexed, head, commits)

    def times(self, paths: Sequence[str]) -> dict[str, Times | None]:
        """(created, last changed) of each path; None for a path not in the indexed commit.
        From the index when there is one; otherwise, and for paths it lacks, walked from git."""
        revision, rows = self._stored.indexed_file_times(paths)
        # Walked from the applied revision, which is not the branch head while that is refused.
        applied = self._wanted
        if revision is None or self._rebuilding is not None:
            return self._store.files_times(paths, applied)
        found: dict[str, Times | None] = {
            path: (row.created, row.updated) for path, row in rows.items() if row.present
        }
        missing = [path for path in paths if path not in found]
        if missing:
            found.update(self._store.files_times(missing, applied))
        return {path: found[path] for path in paths}

    def close(self) -> None:
        """Stop a rebuild in progress (it writes nothing) and wait for it."""
        self._stop.set()
        rebuilding = self._rebuilding
        if rebuilding is not None:
            rebuilding.join()

    def _advance(self, indexed: str, head: str, commits: Sequence[str]) -> None:
        updated, created, removed = fold_changes(map(self._store.file_changes, commits))
        touched = set(updated) | removed
        present = self._store.existing(head, touched)
        _, known = self._stored.indexed_file_times(touched)
        rows = merge_rows(updated, created, touched, present, known)
        if not self._stored.advance_file_times(indexed, head, rows):
            log.info("the file-time index was moved by another process; following it next time")

    def _rebuild(self) -> None:
        try:
            rebuilt = self._rebuild_from_git()
        except Exception:
            log.exception("rebuilding the file-time index failed; lists walk git meanwhile")
            rebuilt = False
        finally:
            with self._lock:
                self._rebuilding = None
                wanted = self._wanted
        if not rebuilt or wanted is None or self._stop.is_set():
            return
        try:
            self.follow(wanted)  # the commits that landed while it was rebuilding
        except Exception:
            log.exception(
                "the file-time index could not follow %s; the next reconcile will", wanted
            )

    def _rebuild_from_git(self) -> bool:
        # The revision the engine applied, which is not the branch head while that is refused
        # (`--allowed-signers`): rebuilt at the head, following the applied one would rebuild
        # again, forever.
        with self._lock:
            head = self._wanted
        commits = self._store.commits_since(None, head) if head is not None else None
        if head is None or commits is None:
            return False
        changes = []
        for commit in commits:
            if self._stop.is_set():
                return False
            changes.append(self._store.file_changes(commit))
        updated, created, _ = fold_changes(changes)
        rows = merge_rows(updated, created, updated, set(self._store.list_files(head)), {})
        self._stored.rebuild_file_times(head, rows)
        log.info("file-time index rebuilt from %d commits (%d files)", len(commits), len(rows))
        return True
