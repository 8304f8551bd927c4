"""A clock tests move by hand, for code that takes a `reconciler.types.Clock`."""

from __future__ import annotations

from datetime import datetime, timedelta


class FakeClock:
    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware start time")
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move time forward (or back, with a negative delta) and return the new now."""
        self._now += delta
        return self._now


class TickingClock(FakeClock):
    """A fake clock that moves `step` forward each time it is read: time passes as code runs."""

    def __init__(self, start: datetime, step: timedelta) -> None:
        super().__init__(start)
        self._step = step

    def now(self) -> datetime:
        return self.advance(self._step)
