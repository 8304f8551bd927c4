"""The state file's change marker: the header of SQLite's wal-index, read from shared memory.

In WAL mode every connection to a database, in any process, maps the same `-shm` file, and a
commit ends by rewriting the wal-index header at its start (the WAL's last frame, its salts and
checksums: https://www.sqlite.org/walformat.html, "The WAL-Index Header"); reads never write it.
So the header's bytes change with every commit, and only then. Its format is fixed, because
processes linked against different SQLite versions share the file.

Mapping the file is safe while this process holds a connection to the database: SQLite truncates
`-shm` only when the first connection of all opens it, and removes it (an unlink, which leaves a
mapping intact) when the last one closes; the map covers only the file's first page, which a
truncation to SQLite's three bytes leaves readable.

The marker's descriptor stays open until the store has closed its connection: closing any
descriptor of a file drops every POSIX lock the process holds on it, SQLite's own included
(https://sqlite.org/howtocorrupt.html, 2.2). Without its shared lock on `-shm`, the next process to
open the state took itself for the first connection and reset the shared memory under the
daemon's writes, which died of SIGBUS. So a process opens one store per state file, as the daemon
and the CLI do: a second store's close would drop the first one's locks the same way.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

_HEADER = 48  # bytes; the header is written twice, the second copy first
_IS_INIT = 12  # offset of the flag that a writer has initialised the header


class WalIndexMarker:
    """`current()`: the wal-index header of the database at `database`; None when the file is
    not in WAL mode (no `-shm` yet), a commit is writing the header this instant, or after
    `close`."""

    def __init__(self, database: Path) -> None:
        self._map: mmap.mmap | None = None
        self._descriptor: int | None = None
        try:
            self._descriptor = os.open(f"{database}-shm", os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            return
        if os.fstat(self._descriptor).st_size >= 2 * _HEADER:
            self._map = mmap.mmap(self._descriptor, 2 * _HEADER, mmap.MAP_SHARED, mmap.PROT_READ)

    def current(self) -> bytes | None:
        shared = self._map
        if shared is None:
            return None
        try:
            # In SQLite's reader's order: the first copy, then the second; unequal copies are a
            # commit caught halfway.
            first, second = shared[:_HEADER], shared[_HEADER : 2 * _HEADER]
        except ValueError:  # closed meanwhile, by the store's close on another thread
            return None
        if first != second or not first[_IS_INIT]:
            return None
        return first

    def close(self) -> None:
        """Stop reading; call it after the connection is closed (see the module's note)."""
        shared, self._map = self._map, None
        if shared is not None:
            shared.close()
        descriptor, self._descriptor = self._descriptor, None
        if descriptor is not None:
            os.close(descriptor)
