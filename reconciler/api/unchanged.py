"""State-store reads answered again from memory while nobody has written to the store.

Every request reads its token and a page's run states. Between two writes (a run's log line, a
token revoked by the CLI) those answers do not change, so `UnchangedReads` keeps each answer with
the store's change marker read just before it was read, and hands it out again as long as the
marker says nothing was committed since, by this process or any other. Only a changed store, or a
backend that cannot tell, costs the trip to the state reader's thread.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from reconciler.api.reader import StateReader
from reconciler.state.changes import ChangeMarker

T = TypeVar("T")

# Keys come from requests (a token someone sends): past this many, start afresh.
MAX_ANSWERS = 4096


class UnchangedReads:
    """Used on the event loop only. The answers are shared between requests: never mutate one."""

    def __init__(self, changes: ChangeMarker, reader: StateReader) -> None:
        self._changes = changes
        self._reader = reader
        self._marker: bytes | None = None
        self._answers: dict[Hashable, Any] = {}

    async def read(self, key: Hashable, call: Callable[[], T]) -> T:
        """What `call()` (a blocking read of the store) answers, read again only if the store
        changed since its answer under `key` was read."""
        marker = self._changes.current()
        if marker is not None and marker == self._marker and key in self._answers:
            answer: T = self._answers[key]
            return answer
        # The marker first: a write between the two leaves the answer newer than its marker,
        # so the next read finds the marker moved and asks again.
        read_at, answer = await self._reader.run(lambda: (self._changes.current(), call()))
        if read_at is not None:
            if read_at != self._marker or len(self._answers) >= MAX_ANSWERS:
                self._marker, self._answers = read_at, {}
            self._answers[key] = answer
        return answer
