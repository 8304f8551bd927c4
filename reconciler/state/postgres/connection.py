"""The PostgreSQL state store's connections: a pool, its transactions, its migrations, and the
change marker that every node's writes move.

Several daemons share one database, so what SQLite gets from its single write lock comes from
PostgreSQL itself here: a unique index or `ON CONFLICT` for "at most one", and a transaction-
scoped advisory lock where a count and an insert must be one step (run claims, per server).

Migrations are versioned (`schema_version`, one row) and applied at start-up under a session
advisory lock, so two nodes starting at once never both migrate, and a node whose code is older
than the database's schema refuses to start rather than write rows it does not understand.

The change marker: every write transaction ends with a notification on `reconciler_changes`
(delivered at commit, to every node), and a listener thread per store counts the notifications
of other handles; the marker is that count and this handle's own commits, counted as they
return, so a read right after a write never sees the old marker.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import psycopg
from psycopg.adapt import Dumper, PyFormat
from psycopg.rows import DictRow, dict_row
from psycopg.types.datetime import DatetimeDumper
from psycopg_pool import ConnectionPool, PoolTimeout

from reconciler.state.errors import StateError
from reconciler.state.location import describe_location as describe

logger = logging.getLogger(__name__)

Db = psycopg.Connection[DictRow]

CHANNEL = "reconciler_changes"
# Any fixed pair of 32-bit keys names our advisory locks; these spell "reconciler" in a way.
LOCK_NAMESPACE = 0x7265636F
MIGRATION_LOCK = 1
RUN_LOCK = 2  # per task: a task's unfinished run
SERVER_LOCK = 3  # per server: its live claims
TASK_CLAIM_LOCK = 4  # per task: its live claims
CONNECT_TIMEOUT_SECONDS = 15
POOL_SIZE = 8

_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE runs (
        id BIGSERIAL PRIMARY KEY,
        task_id BIGINT NOT NULL,
        status TEXT NOT NULL,
        trigger TEXT NOT NULL,
        started_at TIMESTAMPTZ NOT NULL,
        finished_at TIMESTAMPTZ,
        reason TEXT,
        size BIGINT,
        backup_name TEXT,
        target_destination TEXT,
        target_directory TEXT,
        target_name TEXT,
        sha256 TEXT,
        kind TEXT NOT NULL DEFAULT 'backup'
    );
    CREATE INDEX runs_by_task ON runs (task_id, id);
    CREATE INDEX runs_by_start ON runs (started_at);
    CREATE UNIQUE INDEX runs_one_unfinished ON runs (task_id)
        WHERE status IN ('queued', 'running');
    CREATE TABLE run_logs (
        id BIGSERIAL PRIMARY KEY,
        run_id BIGINT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        first_line INTEGER NOT NULL,
        line_count INTEGER NOT NULL,
        lines TEXT NOT NULL,
        UNIQUE (run_id, first_line)
    );
    CREATE TABLE fires (task_id BIGINT PRIMARY KEY, slot TIMESTAMPTZ NOT NULL);
    CREATE TABLE seen (task_id BIGINT PRIMARY KEY, at TIMESTAMPTZ NOT NULL);
    CREATE TABLE alive (
        id BIGSERIAL PRIMARY KEY, since TIMESTAMPTZ NOT NULL, until TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX alive_by_end ON alive (until);
    CREATE TABLE tokens (
        id BIGSERIAL PRIMARY KEY,
        user_id BIGINT NOT NULL,
        name TEXT NOT NULL,
        abilities TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        created_at TIMESTAMPTZ NOT NULL,
        last_used_at TIMESTAMPTZ,
        operator BOOLEAN NOT NULL DEFAULT false
    );
    CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
    CREATE TABLE idempotency_keys (
        user_id BIGINT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status INTEGER NOT NULL,
        body TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (user_id, key)
    );
    CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
    CREATE TABLE file_times (
        path TEXT PRIMARY KEY,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        present BOOLEAN NOT NULL
    );
    CREATE TABLE file_times_revision (
        singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
        revision TEXT NOT NULL
    );
    CREATE TABLE claims (
        task_id BIGINT NOT NULL,
        slot TIMESTAMPTZ NOT NULL,
        attempt INTEGER NOT NULL CHECK (attempt IN (0, 1)),
        server TEXT NOT NULL,
        node_id TEXT NOT NULL,
        claimed_at TIMESTAMPTZ NOT NULL,
        lease_until TIMESTAMPTZ NOT NULL,
        released BOOLEAN NOT NULL,
        taken_over_by TEXT,
        run_id BIGINT,
        PRIMARY KEY (task_id, slot, attempt)
    );
    CREATE INDEX claims_unended ON claims (server) WHERE NOT released AND taken_over_by IS NULL;
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        revision TEXT,
        revision_time TIMESTAMPTZ,
        last_seen TIMESTAMPTZ NOT NULL,
        started_at TIMESTAMPTZ NOT NULL
    );
    """,
    # API-sent secrets, each an age armor encrypted to the cluster's identity.
    "CREATE TABLE api_secrets (key TEXT PRIMARY KEY, armor TEXT NOT NULL)",
    # restic's summary of the snapshot a run stored (`BackupSummary`); NULL for other runs.
    """
    ALTER TABLE runs ADD COLUMN restic_snapshot_id TEXT;
    ALTER TABLE runs ADD COLUMN restic_data_added BIGINT;
    ALTER TABLE runs ADD COLUMN restic_total_bytes BIGINT;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


class _AwareDatetimeDumper(DatetimeDumper):
    """Sends aware datetimes as timestamptz, as psycopg does, and refuses naive ones (psycopg
    would send them as a timestamp in the session's zone): a moment in history has a zone."""

    def upgrade(self, obj: datetime, format: PyFormat) -> Dumper:
        if obj.tzinfo is None or obj.utcoffset() is None:
            raise ValueError(f"history needs timezone-aware datetimes, got naive {obj!r}")
        return self


def _configure(connection: Db) -> None:
    connection.adapters.register_dumper(datetime, _AwareDatetimeDumper)
    # Times come back in UTC, as the SQLite store gives them.
    connection.execute("SET TIME ZONE 'UTC'")


def _unreachable(url: str, exc: Exception) -> StateError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StateError(f"state store {describe(url)}: cannot connect: {detail}")


class PostgresConnection:
    """The pool of connections to one database, opened and migrated; every record kind's SQL
    runs through `write`, `read` or `autocommit`."""

    def __init__(self, url: str) -> None:
        self._url = url
        self.created = False
        """Whether opening it made a new, empty store (its schema did not exist)."""
        self._local_writes = 0
        # Named in each notification, so this handle's listener skips its own commits (counted
        # as they return) rather than count them again when they arrive.
        self._handle = secrets.token_hex(8)
        self._count_lock = threading.Lock()
        self._pool: ConnectionPool[Db] = ConnectionPool(
            url,
            connection_class=psycopg.Connection[DictRow],
            kwargs={
                "row_factory": dict_row,
                "autocommit": True,
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            },
            configure=_configure,
            min_size=1,
            max_size=POOL_SIZE,
            open=False,
            name="reconciler-state",
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except PoolTimeout:
            self._pool.close()
            raise StateError(self._first_failure()) from None
        except psycopg.Error as exc:
            self._pool.close()
            raise _unreachable(url, exc) from None
        try:
            self._migrate()
            self.listener = ChangeListener(url, self._handle)
        except BaseException:
            self._pool.close()
            raise

    def _first_failure(self) -> str:
        """Why the pool could not connect, from one direct attempt (the pool only times out)."""
        try:
            psycopg.connect(self._url, connect_timeout=CONNECT_TIMEOUT_SECONDS).close()
        except psycopg.Error as exc:
            return str(_unreachable(self._url, exc))
        return f"state store {describe(self._url)}: no connection within the timeout"

    def _migrate(self) -> None:
        with self._pool.connection() as db:
            db.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_NAMESPACE, MIGRATION_LOCK))
            try:
                with db.transaction():
                    db.execute(
                        "CREATE TABLE IF NOT EXISTS schema_version ("
                        " singleton INTEGER PRIMARY KEY CHECK (singleton = 1),"
                        " version INTEGER NOT NULL)"
                    )
                    row = db.execute("SELECT version FROM schema_version").fetchone()
                version = 0 if row is None else int(row["version"])
                self.created = version == 0
                if version > SCHEMA_VERSION:
                    raise StateError(
                        f"state store {describe(self._url)}: schema version {version} is newer"
                        f" than this version of reconciler knows ({SCHEMA_VERSION}): another"
                        " node runs a newer reconciler; upgrade this one"
                    )
                for number in range(version, SCHEMA_VERSION):
                    with db.transaction():
                        db.execute(_MIGRATIONS[number].encode())
                        db.execute(
                            "INSERT INTO schema_version (singleton, version) VALUES (1, %s)"
                            " ON CONFLICT (singleton) DO UPDATE SET version = excluded.version",
                            (number + 1,),
                        )
                    logger.info("state store: migrated to schema version %d", number + 1)
            finally:
                db.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_NAMESPACE, MIGRATION_LOCK))

    @contextmanager
    def write(self) -> Iterator[Db]:
        """One write transaction; every node's change marker moves when it commits."""
        with self._pool.connection() as db, db.transaction():
            yield db
            db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self._handle))
        with self._count_lock:
            self._local_writes += 1

    @contextmanager
    def read(self) -> Iterator[Db]:
        """A consistent snapshot across several SELECTs."""
        with self._pool.connection() as db, db.transaction():
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield db

    @contextmanager
    def autocommit(self) -> Iterator[Db]:
        """A connection for one statement (a read, or a write that commits alone)."""
        with self._pool.connection() as db:
            yield db

    def where(self) -> str:
        return describe(self._url)

    def marker(self) -> bytes | None:
        heard = self.listener.heard()
        if heard is None:
            return None
        with self._count_lock:
            return f"{heard}:{self._local_writes}".encode()

    def close(self) -> None:
        self.listener.close()
        self._pool.close()


class ChangeListener:
    """A thread that LISTENs on the change channel and counts what it hears."""

    def __init__(self, url: str, own: str) -> None:
        self._own = own
        self._count = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._listening = threading.Event()
        self._thread = threading.Thread(
            target=self._listen, args=(url,), name="state-changes", daemon=True
        )
        self._thread.start()
        self._listening.wait(CONNECT_TIMEOUT_SECONDS)

    def heard(self) -> int | None:
        """How many notifications arrived; None while not listening (a lost connection: the
        marker cannot tell, so every read asks the store)."""
        if not self._listening.is_set() or self._closed.is_set():
            return None
        with self._lock:
            return self._count

    def _listen(self, url: str) -> None:
        while not self._closed.is_set():
            try:
                with psycopg.connect(
                    url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
                ) as connection:
                    connection.execute(f"LISTEN {CHANNEL}")
                    with self._lock:
                        self._count += 1  # whatever was missed while not listening
                    self._listening.set()
                    # notifies() ends at each timeout, so a close is seen within a second.
                    while not self._closed.is_set():
                        for notification in connection.notifies(timeout=1.0):
                            if notification.payload != self._own:
                                with self._lock:
                                    self._count += 1
            except psycopg.Error as exc:
                self._listening.clear()
                if not self._closed.is_set():
                    logger.warning("state store change listener: %s; reconnecting", exc)
                    self._closed.wait(1.0)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
