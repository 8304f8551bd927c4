"""Answers remembered for Idempotency-Keys, in SQLite."""

from __future__ import annotations

from datetime import datetime

from reconciler.state.idempotency import StoredResponse
from reconciler.state.sqlite.connection import SqliteConnection, from_text, to_text


class SqliteIdempotencyKeys:
    def __init__(self, connection: SqliteConnection) -> None:
        self._connection = connection

    def stored_response(self, user_id: int, key: str, since: datetime) -> StoredResponse | None:
        """The answer remembered for `key`, if it was given at `since` or later."""
        with self._connection.locked() as db:
            row = db.execute(
                "SELECT * FROM idempotency_keys WHERE user_id = ? AND key = ? AND created_at >= ?",
                (user_id, key, to_text(since)),
            ).fetchone()
        if row is None:
            return None
        return StoredResponse(
            row["fingerprint"], row["status"], row["body"], from_text(row["created_at"])
        )

    def store_response(
        self,
        user_id: int,
        key: str,
        response: StoredResponse,
        *,
        forget_before: datetime,
    ) -> None:
        """Remember `response` for `key`, and forget every answer older than `forget_before`."""
        with self._connection.write() as db:
            db.execute(
                "DELETE FROM idempotency_keys WHERE created_at < ?", (to_text(forget_before),)
            )
            db.execute(
                "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, body,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, key) DO UPDATE SET"
                " fingerprint = excluded.fingerprint, status = excluded.status,"
                " body = excluded.body, created_at = excluded.created_at",
                (
                    user_id,
                    key,
                    response.fingerprint,
                    response.status,
                    response.body,
                    to_text(response.created_at),
                ),
            )
