"""How a serving daemon stops: the signals that ask it to, and the graceful part of its stop.

The first SIGTERM or SIGINT asks for a stop: scheduling stops (slots due from then on are missed,
so the next start catches them up), queued runs end as never started, no run is admitted (the
API answers 503), and the running backups get `grace` seconds to finish. Those still going then,
or at once on a second SIGTERM or SIGINT, are interrupted: each ends failed, its partial file
removed. What follows (the HTTP server, token uses, the state store) is `daemon.running`'s close.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from reconciler.runner import Runner
from reconciler.scheduler import Scheduler
from reconciler.types import Clock

log = logging.getLogger("reconciler.stopping")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """SIGTERM and SIGINT as the daemon reads them: the first sets `requested`, a second
    `hurried`. Handled on the event loop, so nothing else (uvicorn) may handle them."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.hurried = asyncio.Event()

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handle the signals while in the block, on the running loop; restore the defaults."""
        loop = asyncio.get_running_loop()
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, self._received, signum)
        try:
            yield
        finally:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)

    def _received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self.requested.is_set():
            log.info("%s received: stopping (send it again to stop without waiting)", name)
            self.requested.set()
        elif not self.hurried.is_set():
            log.warning("%s received again: interrupting the running backups", name)
            self.hurried.set()


async def stop_gracefully(
    scheduler: Scheduler, runner: Runner, clock: Clock, grace: float, signals: StopSignals
) -> None:
    """Stop scheduling and starting runs, give the running ones up to `grace` seconds (less if
    `signals.hurried`), then interrupt those still going; logs each step."""
    scheduler.stop(clock.now())
    running, cancelled = await asyncio.to_thread(runner.stop_starting)
    log.info("stopping: no new runs (scheduling stopped, %d queued run(s) cancelled)", cancelled)
    if running:
        log.info("stopping: %d run(s) still going, waiting up to %gs", running, grace)
        waiting = asyncio.ensure_future(asyncio.to_thread(runner.wait_running, grace))
        hurried = asyncio.ensure_future(signals.hurried.wait())
        await asyncio.wait({waiting, hurried}, return_when=asyncio.FIRST_COMPLETED)
        hurried.cancel()
        runner.interrupt()  # wakes `wait_running` if the second signal came first
        left = await waiting
        if left:
            log.warning("stopping: interrupting %d run(s) still going", left)
        else:
            log.info("stopping: every run finished")
