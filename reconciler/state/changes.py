"""Whether the state store changed: the interface every state backend implements.

The API's reads answer most requests from what they read last time; this is how they know that
nothing has been written since, by this process or any other (a `reconciler run`, a `token
revoke`), without asking the store itself.
"""

from __future__ import annotations

from typing import Protocol


class ChangeMarker(Protocol):
    def current(self) -> bytes | None:
        """A value that differs after every write committed to the store by anyone since it was
        last returned (this handle's writes at once; another process's at once in SQLite, and
        within the milliseconds PostgreSQL takes to deliver the commit's notification); None
        when the backend cannot tell (then every read asks the store).
        A memory read, never I/O: safe to call on the event loop."""
        ...
