"""API tokens: the interface every state backend implements, and its record.

Only a hash of a token is stored; its plaintext is returned once, when it is created.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

TOKEN_PREFIX = "rk_"  # noqa: S105 - a public marker that makes leaked tokens recognisable


def new_token() -> str:
    """A fresh token's plaintext: the prefix and 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(plaintext: str) -> str:
    """What a store keeps of a token. Tokens carry 256 random bits, so a fast unsalted hash is
    enough: nothing to brute-force."""
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    id: int
    user_id: int
    name: str
    abilities: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    operator: bool = False


class Tokens(Protocol):
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
        ...

    def find(self, plaintext: str) -> TokenRecord | None:
        """The token `plaintext` names, None if none (never created, or revoked). A read alone:
        its use is recorded apart, with `record_uses`."""
        ...

    def record_uses(self, uses: Mapping[int, datetime]) -> None:
        """Record when each token (by id) was last used, in one write; a token's last use only
        moves forward, and a token revoked meanwhile is left revoked."""
        ...

    def list(self, user_id: int | None = None) -> list[TokenRecord]:
        """The user's tokens (everyone's when `user_id` is None), oldest first."""
        ...

    def revoke_token(self, token_id: int) -> bool:
        """Delete the token; False if there was none."""
        ...
