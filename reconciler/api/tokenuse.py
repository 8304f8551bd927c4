"""When each API token was last used: noted in memory per request, written in batches.

A request never waits for SQLite's write lock to record its token's use: the daemon writes the
uses noted since the last write every `types.TOKEN_USE_FLUSH_SECONDS`, and once more when it
stops, so `reconciler token list` shows a token's last use at most that late (or after a crash,
lost).
"""

from __future__ import annotations

import threading
from datetime import datetime

from reconciler.state.tokens import Tokens


class TokenUses:
    """Token uses not yet written to `tokens`. Thread-safe: requests note uses from worker
    threads while a flush writes from another."""

    def __init__(self, tokens: Tokens) -> None:
        self._tokens = tokens
        self._lock = threading.Lock()
        self._pending: dict[int, datetime] = {}

    def used(self, token_id: int, now: datetime) -> None:
        with self._lock:
            self._note(token_id, now)

    def flush(self) -> None:
        """Write the uses noted so far. Blocking; uses it could not write are kept for the next."""
        with self._lock:
            pending, self._pending = self._pending, {}
        try:
            self._tokens.record_uses(pending)
        except BaseException:
            with self._lock:
                for token_id, at in pending.items():
                    self._note(token_id, at)
            raise

    def _note(self, token_id: int, at: datetime) -> None:
        # Under the lock; a later use noted meanwhile wins.
        self._pending[token_id] = max(at, self._pending.get(token_id, at))
