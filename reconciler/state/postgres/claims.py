"""Run claims in PostgreSQL: one row per (task, slot, attempt), inserted with `ON CONFLICT DO
NOTHING`. The checks before it (the task has no live claim, its server has room) and the insert
are one step across nodes: the transaction first takes advisory locks on the task and on the
server, always in that order, so two nodes never both see room for one more run."""

from __future__ import annotations

from datetime import datetime

from psycopg.rows import DictRow

from reconciler.state.claims import Claim, ClaimRefusal, SlotKey
from reconciler.state.postgres.connection import (
    LOCK_NAMESPACE,
    SERVER_LOCK,
    TASK_CLAIM_LOCK,
    Db,
    PostgresConnection,
)

# Every query spells its columns and the live condition (lease_until > now, neither released
# nor taken over) literally: SQL is never built from strings here.


def _claim(row: DictRow) -> Claim:
    return Claim(
        task_id=row["task_id"],
        slot=row["slot"],
        server=row["server"],
        node_id=row["node_id"],
        claimed_at=row["claimed_at"],
        lease_until=row["lease_until"],
        released=row["released"],
        taken_over_by=row["taken_over_by"],
        run_id=row["run_id"],
        attempt=row["attempt"],
    )


def _lock(db: Db, task_id: int, server: str) -> None:
    # Advisory locks take 32-bit keys: hashtext maps the server's name onto one.
    db.execute(
        "SELECT pg_advisory_xact_lock(%s, %s), pg_advisory_xact_lock(%s, hashtext(%s))",
        (LOCK_NAMESPACE + TASK_CLAIM_LOCK, task_id % 2**31, LOCK_NAMESPACE + SERVER_LOCK, server),
    )


def _refusal(
    db: Db,
    task_id: int,
    server: str,
    max_parallel: int,
    now: datetime,
    slot: datetime | None = None,
) -> ClaimRefusal | None:
    """Why the task may not be claimed now: `slot` (when given) is claimed already, the task has
    a live claim, or its server has no room. One query: a busy minute's claims are a round trip
    each, one after the other on each node."""
    row = db.execute(
        "SELECT EXISTS (SELECT 1 FROM claims WHERE task_id = %(task)s AND slot = %(slot)s)"
        " AS taken, EXISTS (SELECT 1 FROM claims WHERE task_id = %(task)s"
        " AND NOT released AND taken_over_by IS NULL AND lease_until > %(now)s) AS busy,"
        " (SELECT COUNT(*) FROM claims WHERE server = %(server)s"
        " AND NOT released AND taken_over_by IS NULL AND lease_until > %(now)s) AS live",
        {"task": task_id, "slot": slot, "server": server, "now": now},
    ).fetchone()
    assert row is not None
    if row["taken"]:
        return ClaimRefusal.TAKEN
    if row["busy"]:
        return ClaimRefusal.TASK_BUSY
    return ClaimRefusal.SERVER_FULL if row["live"] >= max_parallel else None


def _insert(db: Db, claim: Claim) -> bool:
    cursor = db.execute(
        "INSERT INTO claims (task_id, slot, server, node_id, claimed_at, lease_until, released,"
        " taken_over_by, run_id, attempt) VALUES (%s, %s, %s, %s, %s, %s, false, NULL, NULL, %s)"
        " ON CONFLICT (task_id, slot, attempt) DO NOTHING",
        (
            claim.task_id,
            claim.slot,
            claim.server,
            claim.node_id,
            claim.claimed_at,
            claim.lease_until,
            claim.attempt,
        ),
    )
    return cursor.rowcount == 1


class PostgresRunClaims:
    def __init__(self, connection: PostgresConnection) -> None:
        self._connection = connection

    def claim(
        self,
        key: SlotKey,
        server: str,
        max_parallel: int,
        node_id: str,
        now: datetime,
        lease_until: datetime,
    ) -> Claim | ClaimRefusal:
        claim = Claim(key.task_id, key.slot, server, node_id, now, lease_until, False, None, None)
        with self._connection.write() as db:
            _lock(db, key.task_id, server)
            refusal = _refusal(db, key.task_id, server, max_parallel, now, key.slot)
            if refusal is not None:
                return refusal
            return claim if _insert(db, claim) else ClaimRefusal.TAKEN

    def attach_run(self, key: SlotKey, node_id: str, run_id: int) -> None:
        with self._connection.write() as db:
            db.execute(
                "UPDATE claims SET run_id = %s WHERE task_id = %s AND slot = %s"
                " AND node_id = %s AND NOT released AND taken_over_by IS NULL",
                (run_id, key.task_id, key.slot, node_id),
            )

    def renew(self, key: SlotKey, node_id: str, now: datetime, lease_until: datetime) -> bool:
        with self._connection.write() as db:
            cursor = db.execute(
                "UPDATE claims SET lease_until = %s WHERE task_id = %s AND slot = %s"
                " AND node_id = %s AND NOT released AND taken_over_by IS NULL"
                " AND lease_until > %s",
                (lease_until, key.task_id, key.slot, node_id, now),
            )
        return cursor.rowcount == 1

    def release(self, key: SlotKey, node_id: str) -> None:
        with self._connection.write() as db:
            db.execute(
                "UPDATE claims SET released = true WHERE task_id = %s AND slot = %s"
                " AND node_id = %s AND taken_over_by IS NULL",
                (key.task_id, key.slot, node_id),
            )

    def expired(self, now: datetime) -> list[Claim]:
        with self._connection.autocommit() as db:
            rows = db.execute(
                "SELECT * FROM claims WHERE NOT released AND taken_over_by IS NULL"
                " AND lease_until <= %s ORDER BY lease_until",
                (now,),
            ).fetchall()
        return [_claim(row) for row in rows]

    def take_over(
        self,
        key: SlotKey,
        server: str,
        max_parallel: int,
        node_id: str,
        now: datetime,
        lease_until: datetime,
    ) -> Claim | None:
        claim = Claim(
            key.task_id, key.slot, server, node_id, now, lease_until, False, None, None, 1
        )
        with self._connection.write() as db:
            _lock(db, key.task_id, server)
            if _refusal(db, key.task_id, server, max_parallel, now) is not None:
                return None
            cursor = db.execute(
                "UPDATE claims SET taken_over_by = %s WHERE task_id = %s AND slot = %s"
                " AND attempt = 0 AND NOT released AND taken_over_by IS NULL"
                " AND lease_until <= %s",
                (node_id, key.task_id, key.slot, now),
            )
            if cursor.rowcount != 1 or not _insert(db, claim):
                return None
        return claim

    def live_claims(self, now: datetime) -> list[Claim]:
        with self._connection.autocommit() as db:
            rows = db.execute(
                "SELECT * FROM claims WHERE NOT released AND taken_over_by IS NULL"
                " AND lease_until > %s ORDER BY task_id, slot",
                (now,),
            ).fetchall()
        return [_claim(row) for row in rows]

    def forget_before(self, before: datetime) -> int:
        with self._connection.write() as db:
            return db.execute(
                "DELETE FROM claims WHERE slot < %s AND (released OR taken_over_by IS NOT NULL)",
                (before,),
            ).rowcount
