"""The state store in a PostgreSQL database that several daemons share: one pool, one module per
record kind (the same kinds, and the same rules, as `reconciler.state.sqlite`)."""

from __future__ import annotations

from reconciler.state.postgres.apisecrets import PostgresSecretRows
from reconciler.state.postgres.claims import PostgresRunClaims
from reconciler.state.postgres.connection import PostgresConnection
from reconciler.state.postgres.filetimes import PostgresStoredFileTimes
from reconciler.state.postgres.idempotency import PostgresIdempotencyKeys
from reconciler.state.postgres.nodes import PostgresNodeRegistry
from reconciler.state.postgres.runs import PostgresRuns
from reconciler.state.postgres.schedule import PostgresScheduleBookkeeping
from reconciler.state.postgres.taskids import PostgresTaskIdCounter
from reconciler.state.postgres.tokens import PostgresTokens


class NotifyMarker:
    """The change marker of a PostgreSQL store (see `connection`): moves with every node's
    commits; None once the store is closed or while its listener is reconnecting."""

    def __init__(self, connection: PostgresConnection) -> None:
        self._connection: PostgresConnection | None = connection

    def current(self) -> bytes | None:
        connection = self._connection
        return None if connection is None else connection.marker()

    def close(self) -> None:
        self._connection = None


class PostgresStateStore:
    """Every record kind over one pool of connections to the database at `url`."""

    def __init__(self, url: str) -> None:
        self._connection = PostgresConnection(url)
        self.runs = PostgresRuns(self._connection)
        self.tokens = PostgresTokens(self._connection)
        self.schedule = PostgresScheduleBookkeeping(self._connection)
        self.idempotency = PostgresIdempotencyKeys(self._connection)
        self.file_times = PostgresStoredFileTimes(self._connection)
        self.task_id_counter = PostgresTaskIdCounter(self._connection)
        self.claims = PostgresRunClaims(self._connection)
        self.nodes = PostgresNodeRegistry(self._connection)
        self.changes = NotifyMarker(self._connection)
        self.api_secrets = PostgresSecretRows(self._connection)

    @property
    def created(self) -> bool:
        return self._connection.created

    def close(self) -> None:
        self.changes.close()
        self._connection.close()
