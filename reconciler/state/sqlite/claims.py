"""Run claims in SQLite: one row per (task, slot, attempt); BEGIN IMMEDIATE makes the count of
live claims and the insert one step for every process sharing the file."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from reconciler.state.claims import Claim, ClaimRefusal, SlotKey
from reconciler.state.sqlite.connection import SqliteConnection, from_text, to_text

# Every query spells its columns and the live condition (lease_until > now, neither released
# nor taken over) literally: SQL is never built from strings here.


def _claim(row: sqlite3.Row) -> Claim:
    return Claim(
        task_id=int(row["task_id"]),
        slot=from_text(row["slot"]),
        server=row["server"],
        node_id=row["node_id"],
        claimed_at=from_text(row["claimed_at"]),
        lease_until=from_text(row["lease_until"]),
        released=bool(row["released"]),
        taken_over_by=row["taken_over_by"],
        run_id=row["run_id"],
        attempt=int(row["attempt"]),
    )


def _refusal(
    db: sqlite3.Connection, task_id: int, server: str, max_parallel: int, now: datetime
) -> ClaimRefusal | None:
    moment = to_text(now)
    if db.execute(
        "SELECT 1 FROM claims WHERE task_id = ?"
        " AND released = 0 AND taken_over_by IS NULL AND lease_until > ?",
        (task_id, moment),
    ).fetchone():
        return ClaimRefusal.TASK_BUSY
    (count,) = db.execute(
        "SELECT COUNT(*) FROM claims WHERE server = ?"
        " AND released = 0 AND taken_over_by IS NULL AND lease_until > ?",
        (server, moment),
    ).fetchone()
    return ClaimRefusal.SERVER_FULL if count >= max_parallel else None


def _insert(db: sqlite3.Connection, claim: Claim) -> bool:
    cursor = db.execute(
        "INSERT INTO claims (task_id, slot, server, node_id, claimed_at, lease_until, released,"
        " taken_over_by, run_id, attempt) VALUES (?, ?, ?, ?, ?, ?, 0, NULL, NULL, ?)"
        " ON CONFLICT DO NOTHING",
        (
            claim.task_id,
            to_text(claim.slot),
            claim.server,
            claim.node_id,
            to_text(claim.claimed_at),
            to_text(claim.lease_until),
            claim.attempt,
        ),
    )
    return cursor.rowcount == 1


class SqliteRunClaims:
    def __init__(self, connection: SqliteConnection) -> None:
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
            if db.execute(
                "SELECT 1 FROM claims WHERE task_id = ? AND slot = ?",
                (key.task_id, to_text(key.slot)),
            ).fetchone():
                return ClaimRefusal.TAKEN
            refusal = _refusal(db, key.task_id, server, max_parallel, now)
            if refusal is not None:
                return refusal
            return claim if _insert(db, claim) else ClaimRefusal.TAKEN

    def attach_run(self, key: SlotKey, node_id: str, run_id: int) -> None:
        with self._connection.write() as db:
            db.execute(
                "UPDATE claims SET run_id = ? WHERE task_id = ? AND slot = ? AND node_id = ?"
                " AND released = 0 AND taken_over_by IS NULL",
                (run_id, key.task_id, to_text(key.slot), node_id),
            )

    def renew(self, key: SlotKey, node_id: str, now: datetime, lease_until: datetime) -> bool:
        with self._connection.write() as db:
            cursor = db.execute(
                "UPDATE claims SET lease_until = ? WHERE task_id = ? AND slot = ? AND node_id = ?"
                " AND released = 0 AND taken_over_by IS NULL AND lease_until > ?",
                (to_text(lease_until), key.task_id, to_text(key.slot), node_id, to_text(now)),
            )
        return cursor.rowcount == 1

    def release(self, key: SlotKey, node_id: str) -> None:
        with self._connection.write() as db:
            db.execute(
                "UPDATE claims SET released = 1 WHERE task_id = ? AND slot = ? AND node_id = ?"
                " AND taken_over_by IS NULL",
                (key.task_id, to_text(key.slot), node_id),
            )

    def expired(self, now: datetime) -> list[Claim]:
        with self._connection.locked() as db:
            rows = db.execute(
                "SELECT * FROM claims WHERE released = 0 AND taken_over_by IS NULL"
                " AND lease_until <= ? ORDER BY lease_until",
                (to_text(now),),
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
            if _refusal(db, key.task_id, server, max_parallel, now) is not None:
                return None
            cursor = db.execute(
                "UPDATE claims SET taken_over_by = ? WHERE task_id = ? AND slot = ?"
                " AND attempt = 0 AND released = 0 AND taken_over_by IS NULL AND lease_until <= ?",
                (node_id, key.task_id, to_text(key.slot), to_text(now)),
            )
            if cursor.rowcount != 1 or not _insert(db, claim):
                return None
        return claim

    def live_claims(self, now: datetime) -> list[Claim]:
        with self._connection.locked() as db:
            rows = db.execute(
                "SELECT * FROM claims WHERE released = 0 AND taken_over_by IS NULL"
                " AND lease_until > ? ORDER BY task_id, slot",
                (to_text(now),),
            ).fetchall()
        return [_claim(row) for row in rows]

    def forget_before(self, before: datetime) -> int:
        with self._connection.write() as db:
            cursor = db.execute(
                "DELETE FROM claims WHERE slot < ? AND (released = 1 OR taken_over_by IS NOT NULL)",
                (to_text(before),),
            )
        return cursor.rowcount
