"""API-sent secrets in PostgreSQL: one row per key, holding the value's age armor only (the
encryption is `reconciler.secrets`'s; this module never sees a plaintext)."""

from __future__ import annotations

from collections.abc import Iterable

from reconciler.state.postgres.connection import PostgresConnection


class PostgresSecretRows:
    def __init__(self, connection: PostgresConnection) -> None:
        self._connection = connection

    def armor(self, key: str) -> str | None:
        with self._connection.autocommit() as db:
            row = db.execute("SELECT armor FROM api_secrets WHERE key = %s", (key,)).fetchone()
        return None if row is None else str(row["armor"])

    def keys(self) -> set[str]:
        with self._connection.autocommit() as db:
            return {row["key"] for row in db.execute("SELECT key FROM api_secrets")}

    def put(self, key: str, armor: str) -> None:
        with self._connection.write() as db:
            db.execute(
                "INSERT INTO api_secrets (key, armor) VALUES (%s, %s)"
                " ON CONFLICT (key) DO UPDATE SET armor = excluded.armor",
                (key, armor),
            )

    def forget(self, keys: Iterable[str]) -> None:
        with self._connection.write() as db:
            db.execute("DELETE FROM api_secrets WHERE key = ANY(%s)", (list(keys),))

    def describe(self) -> str:
        return f"the state store {self._connection.where()}"
