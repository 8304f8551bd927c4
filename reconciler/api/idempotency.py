"""`Idempotency-Key`: a retried write returns the first answer instead of writing again.

A key is remembered per user for 24 hours with a fingerprint of the request (method, path, body)
and the first successful answer. Because the commit can land while its answer is lost (the daemon
killed between the two), every commit of a keyed request also carries a trailer naming the key
and fingerprint: a retry whose key the state store does not know looks for it in the last day of
the branch's history and answers from what that commit wrote, rather than writing it twice.
Failed requests wrote nothing, so their keys are not remembered and a retry runs again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from reconciler.api.errors import Invalid
from reconciler.desired import DesiredState
from reconciler.gitstore import GitStore
from reconciler.state.idempotency import IdempotencyKeys, StoredResponse

KEY_LIFETIME = timedelta(hours=24)
HEADER = "Idempotency-Key"
_TRAILER = "Reconciler-Request"
_TASK_TRAILER = "Reconciler-Task"
# A retry comes within minutes of its first attempt: the walk looks at the newest 1,000 commits,
# so an unknown key costs a few milliseconds however long the history is.
_SEARCH_LIMIT = 1000
_KEY_REUSED = f"This {HEADER} was already used for a different request within 24 hours."


@dataclass(frozen=True)
class KeyedRequest:
    """A write sent with an Idempotency-Key, and how to answer it again from a found commit."""

    user_id: int
    key: str
    fingerprint: str
    status: int
    replay: Callable[[DesiredState, int | None], Any]

    @property
    def key_id(self) -> str:
        # The key is the client's text: git history gets a digest of it, never the text.
        return hashlib.sha256(f"{self.user_id}\0{self.key}".encode()).hexdigest()[:32]

    def trailers(self, task_id: int | None) -> str:
        lines = [f"{_TRAILER}: {self.key_id} {self.fingerprint[:32]}"]
        if task_id is not None:
            lines.append(f"{_TASK_TRAILER}: {task_id}")
        return "\n".join(lines)

    def stored(self, answer: Any, now: datetime) -> StoredResponse:
        return StoredResponse(
            self.fingerprint, self.status, json.dumps(jsonable_encoder(answer)), now
        )


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(f"{method} {path}\n".encode() + body).hexdigest()


def earlier_answer(
    request: KeyedRequest,
    keys: IdempotencyKeys,
    store: GitStore,
    desired: DesiredState,
    revision: str | None,
    now: datetime,
) -> JSONResponse | None:
    """The answer to give instead of writing, if this key was already carried out; blocking."""
    stored = keys.stored_response(request.user_id, request.key, now - KEY_LIFETIME)
    if stored is None and revision is not None:
        stored = _from_history(request, store, desired, revision, now)
        if stored is not None:
            keys.store_response(
                request.user_id, request.key, stored, forget_before=now - KEY_LIFETIME
            )
    if stored is None:
        return None
    if stored.fingerprint != request.fingerprint:
        raise Invalid({HEADER: [_KEY_REUSED]})
    return JSONResponse(json.loads(stored.body), stored.status)


def _from_history(
    request: KeyedRequest, store: GitStore, desired: DesiredState, revision: str, now: datetime
) -> StoredResponse | None:
    pattern = re.compile(
        rf"^{_TRAILER}: {request.key_id} (?P<fp>[0-9a-f]+)$"
        rf"(?:\n{_TASK_TRAILER}: (?P<task>[0-9]+)$)?",
        re.MULTILINE,
    )
    for _sha, message in store.recent_messages(revision, now - KEY_LIFETIME, _SEARCH_LIMIT):
        found = pattern.search(message)
        if found is None:
            continue
        if not request.fingerprint.startswith(found["fp"]):
            raise Invalid({HEADER: [_KEY_REUSED]})
        task_id = None if found["task"] is None else int(found["task"])
        return request.stored(request.replay(desired, task_id), now)
    return None
