"""API tokens in SQLite: a hash of each, never its plaintext."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime

from reconciler.state.sqlite.connection import (
    SqliteConnection,
    from_text,
    optional_time,
    to_text,
)
from reconciler.state.tokens import TOKEN_PREFIX, TokenRecord, new_token, token_hash


def _token(row: sqlite3.Row) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        abilities=tuple(json.loads(row["abilities"])),
        created_at=from_text(row["created_at"]),
        last_used_at=optional_time(row["last_used_at"]),
        operator=bool(row["operator"]),
    )


class SqliteTokens:
    def __init__(self, connection: SqliteConnection) -> None:
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
        """A new token and its plaintext, which is returned this once and never stored."""
        plaintext = new_token()
        created = to_text(now)
        with self._connection.write() as db:
            cursor = db.execute(
                "INSERT INTO tokens (user_id, name, abilities, hash, created_at, operator)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    user_id,
                    name,
                    json.dumps(list(abilities)),
                    token_hash(plaintext),
                    created,
                    int(operator),
                ),
            )
            assert cursor.lastrowid is not None
            token_id = cursor.lastrowid
        record = TokenRecord(
            id=token_id,
            user_id=user_id,
            name=name,
            abilities=tuple(abilities),
            created_at=from_text(created),
            last_used_at=None,
            operator=operator,
        )
        return record, plaintext

    def find(self, plaintext: str) -> TokenRecord | None:
        # Looking up by hash keeps the comparison independent of how much of a guess is right.
        if not plaintext.startswith(TOKEN_PREFIX):
            return None
        with self._connection.locked() as db:
            row = db.execute(
                "SELECT * FROM tokens WHERE hash = ?", (token_hash(plaintext),)
            ).fetchone()
        return None if row is None else _token(row)

    def record_uses(self, uses: Mapping[int, datetime]) -> None:
        if not uses:
            return
        with self._connection.write() as db:
            # Fixed-width UTC text: text order is time order, so MAX keeps the later use.
            db.executemany(
                "UPDATE tokens SET last_used_at = MAX(COALESCE(last_used_at, ''), ?) WHERE id = ?",
                [(to_text(at), token_id) for token_id, at in uses.items()],
            )

    def list(self, user_id: int | None = None) -> list[TokenRecord]:
        with self._connection.locked() as db:
            if user_id is None:
                rows = db.execute("SELECT * FROM tokens ORDER BY id")
            else:
                rows = db.execute(
                    "SELECT * FROM tokens WHERE user_id = ? ORDER BY id",
                    (user_id,),
                )
            return [_token(row) for row in rows.fetchall()]

    def revoke_token(self, token_id: int) -> bool:
        with self._connection.write() as db:
            return db.execute("DELETE FROM tokens WHERE id = ?", (token_id,)).rowcount > 0
