"""The state store in one SQLite file: one connection owner, one module per record kind."""

from __future__ import annotations

from pathlib import Path

from reconciler.state.sqlite.claims import SqliteRunClaims
from reconciler.state.sqlite.connection import SqliteConnection
from reconciler.state.sqlite.filetimes import SqliteStoredFileTimes
from reconciler.state.sqlite.idempotency import SqliteIdempotencyKeys
from reconciler.state.sqlite.nodes import SqliteNodeRegistry
from reconciler.state.sqlite.runs import SqliteRuns
from reconciler.state.sqlite.schedule import SqliteScheduleBookkeeping
from reconciler.state.sqlite.taskids import SqliteTaskIdCounter
from reconciler.state.sqlite.tokens import SqliteTokens
from reconciler.state.sqlite.walindex import WalIndexMarker


class SqliteStateStore:
    """Every record kind over one connection to the state file at `path`."""

    def __init__(self, path: Path | str) -> None:
        self._connection = SqliteConnection(path)
        self.runs = SqliteRuns(self._connection)
        self.tokens = SqliteTokens(self._connection)
        self.schedule = SqliteScheduleBookkeeping(self._connection)
        self.idempotency = SqliteIdempotencyKeys(self._connection)
        self.file_times = SqliteStoredFileTimes(self._connection)
        self.task_id_counter = SqliteTaskIdCounter(self._connection)
        self.claims = SqliteRunClaims(self._connection)
        self.nodes = SqliteNodeRegistry(self._connection)
        # Opened after the connection has made the file a WAL database, so its -shm exists.
        self.changes = WalIndexMarker(Path(path))
        # API-sent secrets are in a file beside the state file, never in it (see `secrets`).
        self.api_secrets = None

    @property
    def created(self) -> bool:
        """Whether opening it made a new, empty store (none was there, or it was deleted)."""
        return self._connection.created

    def close(self) -> None:
        self._connection.close()
        self.changes.close()  # after the connection: closing its descriptor drops POSIX locks
