"""Answers remembered for Idempotency-Keys: the interface every state backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class StoredResponse:
    """The first answer to a write sent with an Idempotency-Key."""

    fingerprint: str
    status: int
    body: str
    created_at: datetime


class IdempotencyKeys(Protocol):
    def stored_response(self, user_id: int, key: str, since: datetime) -> StoredResponse | None:
        """The answer remembered for `key`, if it was given at `since` or later."""
        ...

    def store_response(
        self,
        user_id: int,
        key: str,
        response: StoredResponse,
        *,
        forget_before: datetime,
    ) -> None:
        """Remember `response` for `key`, and forget every answer older than `forget_before`."""
        ...
