"""One daemon's locks on its restic repositories: backups and reads of a repository share it,
`forget` and `prune` take it alone, so a prune never runs beside a backup of the same repository.

restic's own repository lock keeps other processes out (a `reconciler prune` by hand, another
node); inside the daemon this lock makes a prune or a rotation wait its turn instead of failing
on restic's lock after a few retries. A waiting exclusive holder goes before new shared ones, so
a busy repository's weekly prune is not put off forever.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager


class _ReadersWriter:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._readers: dict[int, int] = {}  # thread id: how many times it holds the lock
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._changed:
            # A thread already reading goes on even past a waiting writer: it would wait for
            # itself otherwise.
            self._changed.wait_for(
                lambda: me in self._readers or not (self._writing or self._writers_waiting)
            )
            self._readers[me] = self._readers.get(me, 0) + 1
        try:
            yield
        finally:
            with self._changed:
                self._readers[me] -= 1
                if not self._readers[me]:
                    del self._readers[me]
                self._changed.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._changed:
            self._writers_waiting += 1
            try:
                self._changed.wait_for(lambda: not self._writing and not self._readers)
            finally:
                self._writers_waiting -= 1
            self._writing = True
        try:
            yield
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
        """Held by a backup, a dump read or a check of `repository`."""
        return self._lock(repository).shared()

    def exclusive(self, repository: str) -> AbstractContextManager[None]:
        """Held by a forget or a prune of `repository`: no backup of it runs meanwhile."""
        return self._lock(repository).exclusive()
