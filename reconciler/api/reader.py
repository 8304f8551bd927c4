"""The API's short state-store reads, off the event loop, a batch at a time.

Every request reads the state store once or twice (its token; a page's run states). Handing
each read to a pool thread and back costs more than the read itself: a thread wake-up, a pass
of the GIL and an event-loop wake-up. `StateReader` runs the reads queued meanwhile one after
another on its own thread and wakes the loop once for all of them. The reads share one SQLite
connection (and its lock), so a single thread gives up no parallelism.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class StateReader:
    """Runs blocking calls on one thread, started at the first call and ended by `close`."""

    def __init__(self, name: str = "api-reads") -> None:
        self._name = name
        self._ready = threading.Condition()
        self._queue: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    async def run(self, call: Callable[[], T]) -> T:
        """What `call()` returns (or raises), called on the reader's thread."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the API's state reader is closed")
            self._queue.append((call, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self._name, daemon=True)
                self._thread.start()
            self._ready.notify()
        return await future

    def close(self) -> None:
        """Run what is queued, then end the thread. Blocking."""
        with self._ready:
            self._closed = True
            self._ready.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _serve(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if not self._queue:
                    return
                batch, self._queue = self._queue, []
            settled: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
            for call, future in batch:
                try:
                    outcome: _Outcome = (future, call(), None)
                except BaseException as error:  # handed to the caller, who sees it raised
                    outcome = (future, None, error)
                settled.setdefault(future.get_loop(), []).append(outcome)
            for loop, outcomes in settled.items():
                # A closed loop raises: nobody waits for its outcomes any more.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_settle, outcomes)


def _settle(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.cancelled():  # the request went away meanwhile
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
