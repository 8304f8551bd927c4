"""Observed state: runs and their logs, scheduler bookkeeping, API tokens, idempotency keys, the
file-time index and task ids.

Nothing here is configuration (that lives in git), so the store can be deleted and rebuilt; what
is lost is history, never intent. Each record kind has its own interface (`runs`, `tokens`,
`schedule`, `idempotency`, `filetimes`, `taskids`, `claims` and `nodes` for several daemons
sharing one store); a `StateStore` holds one of each behind one
connection, and callers take the narrowest interface they need; `changes` tells whether anyone
wrote to the store since (`changes.py`). `open_state` chooses the backend: SQLite
(`reconciler.state.sqlite`, the default) or PostgreSQL (`reconciler.state.postgres`, which
several daemons share).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from reconciler.state.changes import ChangeMarker
from reconciler.state.claims import RunClaims
from reconciler.state.filetimes import StoredFileTimes
from reconciler.state.idempotency import IdempotencyKeys
from reconciler.state.location import StateLocation, is_postgres_url
from reconciler.state.nodes import NodeRegistry
from reconciler.state.runs import Runs
from reconciler.state.schedule import ScheduleBookkeeping
from reconciler.state.sqlite import SqliteStateStore
from reconciler.state.taskids import TaskIdCounter
from reconciler.state.tokens import Tokens
from reconciler.types import SecretRows


class StateStore(Protocol):
    @property
    def runs(self) -> Runs: ...

    @property
    def tokens(self) -> Tokens: ...

    @property
    def schedule(self) -> ScheduleBookkeeping: ...

    @property
    def idempotency(self) -> IdempotencyKeys: ...

    @property
    def file_times(self) -> StoredFileTimes: ...

    @property
    def task_id_counter(self) -> TaskIdCounter: ...

    @property
    def changes(self) -> ChangeMarker: ...

    @property
    def claims(self) -> RunClaims: ...

    @property
    def nodes(self) -> NodeRegistry: ...

    @property
    def api_secrets(self) -> SecretRows | None:
        """Where API-sent secrets live in the store (PostgreSQL: age armors only); None when
        they live in a file beside it (SQLite)."""
        ...

    @property
    def created(self) -> bool:
        """Whether opening it made a new, empty store (none was there, or it was deleted)."""
        ...

    def close(self) -> None: ...


def open_state(location: StateLocation) -> StateStore:
    """The state store at `location`, created and migrated as needed: a `postgresql://` (or
    `postgres://`) libpq URL names a PostgreSQL database that several daemons may share,
    anything else the path of an SQLite file."""
    if is_postgres_url(location):
        # psycopg is imported only by those who use it: every CLI command imports this package.
        from reconciler.state.postgres import PostgresStateStore

        return PostgresStateStore(str(location))
    return SqliteStateStore(Path(location))
