"""API tokens in PostgreSQL: a hash of each, never its plaintext."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime

from psycopg.rows import DictRow

from reconciler.state.postgres.connection import PostgresConnection
from reconciler.state.tokens import TOKEN_PREFIX, TokenRecord, new_token, token_hash


def _token(row: DictRow) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        abilities=tuple(json.loads(row["abilities"])),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        operator=row["operator"],
    )


class PostgresTokens:
    def __init__(self, connection: PostgresConnection) -> None:
        self._connection = connection

    def create_token(
        self,
        user_id: int,
        name: str,
        abilities: Sequence[str],
        now: datetime,
        *,
        operator: bool = False,
    ) -> tuple[TokenRecord, str]:
        plaintext = new_token()
        with self._connection.write() as db:
            row = db.execute(
                "INSERT INTO tokens (user_id, name, abilities, hash, created_at, operator)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING *",
                (user_id, name, json.dumps(list(abilities)), token_hash(plaintext), now, operator),
            ).fetchone()
        assert row is not None
        return _token(row), plaintext

    def find(self, plaintext: str) -> TokenRecord | None:
        if not plaintext.startswith(TOKEN_PREFIX):
            return None
        with self._connection.autocommit() as db:
            row = db.execute(
                "SELECT * FROM tokens WHERE hash = %s", (token_hash(plaintext),)
            ).fetchone()
        return None if row is None else _token(row)

    def record_uses(self, uses: Mapping[int, datetime]) -> None:
        if not uses:
            return
        with self._connection.write() as db, db.cursor() as cursor:
            cursor.executemany(
                "UPDATE tokens SET last_used_at = GREATEST(last_used_at, %s) WHERE id = %s",
                [(at, token_id) for token_id, at in uses.items()],
            )

    def list(self, user_id: int | None = None) -> list[TokenRecord]:
        with self._connection.autocommit() as db:
            if user_id is None:
                rows = db.execute("SELECT * FROM tokens ORDER BY id").fetchall()
            else:
                rows = db.execute(
                    "SELECT * FROM tokens WHERE user_id = %s ORDER BY id", (user_id,)
                ).fetchall()
        return [_token(row) for row in rows]

    def revoke_token(self, token_id: int) -> bool:
        with self._connection.write() as db:
            return db.execute("DELETE FROM tokens WHERE id = %s", (token_id,)).rowcount > 0
