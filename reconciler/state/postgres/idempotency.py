"""Answers remembered for Idempotency-Keys, in PostgreSQL."""

from __future__ import annotations

from datetime import datetime

from reconciler.state.idempotency import StoredResponse
from reconciler.state.postgres.connection import PostgresConnection


class PostgresIdempotencyKeys:
    def __init__(self, connection: PostgresConnection) -> None:
        self._connection = connection

    def stored_response(self, user_id: int, key: str, since: datetime) -> StoredResponse | None:
        with self._connection.autocommit() as db:
            row = db.execute(
                "SELECT * FROM idempotency_keys WHERE user_id = %s AND key = %s"
                " AND created_at >= %s",
                (user_id, key, since),
            ).fetchone()
        if row is None:
            return None
        return StoredResponse(row["fingerprint"], row["status"], row["body"], row["created_at"])

    def store_response(
        self,
        user_id: int,
        key: str,
        response: StoredResponse,
        *,
        forget_before: datetime,
    ) -> None:
        with self._connection.write() as db:
            db.execute("DELETE FROM idempotency_keys WHERE created_at < %s", (forget_before,))
            db.execute(
                "INSERT INTO idempotency_keys (user_id, key, fingerprint, status, body,"
                " created_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (user_id, key)"
                " DO UPDATE SET fingerprint = excluded.fingerprint, status = excluded.status,"
                " body = excluded.body, created_at = excluded.created_at",
                (
                    user_id,
                    key,
                    response.fingerprint,
                    response.status,
                    response.body,
                    response.created_at,
                ),
            )
