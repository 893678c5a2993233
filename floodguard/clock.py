"""Monotonic clocks: the real one for the guard, a settable fake one for tests.

Policy code never reads time itself; callers pass ``now`` (monotonic seconds) taken from a
``Clock``. Monotonic time does not jump when the wall clock is set, so bans and token buckets
are immune to NTP steps.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Anything that tells monotonic time in seconds."""

    def now(self) -> float:
        """Current monotonic time, seconds."""
        ...


class MonotonicClock:
    """The real clock: ``time.monotonic``."""

    __slots__ = ()

    def now(self) -> float:
        """Current monotonic time, seconds."""
        return time.monotonic()


class FakeClock:
    """A clock tests move by hand; it never moves on its own."""

    __slots__ = ("_now",)

    def __init__(self, start: float = 1000.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        """The time last set."""
        return self._now

    def set(self, value: float) -> None:
        """Jump to ``value``; monotonic, so going backwards is refused."""
        if value < self._now:
            raise ValueError(f"a monotonic clock cannot go back ({value} < {self._now})")
        self._now = float(value)

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` and return the new time."""
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        self._now += seconds
        return self._now
