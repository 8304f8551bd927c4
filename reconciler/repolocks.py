"""One daemon's locks on its restic repositories: backups and reads of a repository share it,
`forget`, `prune` and `check` take it alone, so a prune never runs beside a backup of the same
repository.

restic's own repository lock keeps other processes out (a `reconciler prune` by hand, another
node); inside the daemon this lock makes a prune or a check wait its turn instead of failing on
restic's lock after a few retries. A waiting exclusive holder does not hold up new backups (a
backup would otherwise wait, its `before` hooks already run, for the longest backup under way);
a run's rotation does not wait at all (`wait=False`), and forgets at the next run instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager


class _ReadersWriter:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._readers = 0
        self._writing = False

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._writing)
            self._readers += 1
        try:
            yield
        finally:
            with self._changed:
                self._readers -= 1
                self._changed.notify_all()

    @contextmanager
    def exclusive(self, wait: bool) -> Iterator[bool]:
        with self._changed:
            free = self._changed.wait_for(
                lambda: not self._writing and not self._readers, timeout=None if wait else 0
            )
            if not free:
                yield False
                return
            self._writing = True
        try:
            yield True
        finally:
            with self._changed:
                self._writing = False
                self._changed.notify_all()


class RepositoryLocks:
    """A readers-writer lock per repository string (one per daemon, shared by its pipelines)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, _ReadersWriter] = {}

    def _lock(self, repository: str) -> _ReadersWriter:
        with self._guard:
            return self._locks.setdefault(repository, _ReadersWriter())

    def shared(self, repository: str) -> AbstractContextManager[None]:
        """Held by a backup or a dump read of `repository`."""
        return self._lock(repository).shared()

    def exclusive(self, repository: str, *, wait: bool = True) -> AbstractContextManager[bool]:
        """Held by a forget, prune or check of `repository`: no backup of it runs meanwhile.
        Yields whether it is held: without `wait`, False at once when the repository is busy."""
        return self._lock(repository).exclusive(wait)
