"""Timed holds on a key (an account, a source address): until when, at which escalation level,
and the end of each hold reported exactly once (for its end event).

A hold stays listed ``ENDED_GRACE`` seconds past its end, so ``expired`` can report it even when
nothing looked at it in between; a hold replaced by a new one before its end was reported is
reported first. Bounded by ``cap`` keys (LRU); times are arguments.
"""

from __future__ import annotations

from typing import Any

from .lru import LruTable

ENDED_GRACE = 3600.0
MAX_UNREPORTED = 10_000


class Holds:
    """key -> (until, level), with end reporting."""

    __slots__ = ("table", "_ended")

    def __init__(self, cap: int) -> None:
        self.table: LruTable[str, tuple[float, int]] = LruTable(cap)
        self._ended: list[str] = []

    def __len__(self) -> int:
        return len(self.table)

    def put(self, now: float, key: str, until: float, level: int) -> None:
        """Hold `key` until `until` (replacing any hold of it)."""
        if (self.table.peek(key, now) is not None and self.until(now, key) is None
                and len(self._ended) < MAX_UNREPORTED):
            self._ended.append(key)  # the last one ended unreported: its event comes first
        self.table.put(key, (until, level), until + ENDED_GRACE, now)

    def until(self, now: float, key: str) -> float | None:
        """When the hold on `key` ends, or None when there is none."""
        if not self.table:
            return None
        entry = self.table.peek(key, now)
        if entry is None or entry[0] <= now:
            return None
        return entry[0]

    def level(self, now: float, key: str) -> int:
        """The level of the key's current (or last) hold, 0 if none."""
        entry = self.table.peek(key, now)
        return 0 if entry is None else entry[1]

    def lift(self, now: float, key: str) -> bool:
        """End the hold at once (operator); True when one was in force."""
        was = self.until(now, key) is not None
        self.table.discard(key)
        return was

    def expired(self, now: float, limit: int = 1000) -> list[str]:
        """Keys whose hold has ended since the last call."""
        ended, self._ended = self._ended, []
        for key, (until, _level), _ in self.table.items(now):
            if len(ended) >= limit:
                break
            if until <= now:
                ended.append(key)
                self.table.discard(key)
        return ended

    def active(self, now: float) -> list[tuple[str, float, int]]:
        """(key, until, level) of every hold in force."""
        return [(key, until, level) for key, (until, level), _ in self.table.items(now)
                if until > now]

    def export(self, now: float) -> list[list[Any]]:
        """Plain data, times relative to now."""
        return [[key, round(until - now, 3), level] for key, until, level in self.active(now)]

    def restore(self, now: float, data: Any) -> None:
        """Load what export() made."""
        for key, remaining, level in data or ():
            if float(remaining) > 0:
                self.put(now, str(key), now + float(remaining), int(level))
