"""Account protection: one account guessed from many sources (distributed guessing).

Proven failures for one account (AOR) from ``sources`` distinct sources within ``window`` put
the account under protection: while it lasts, REGISTERs for that AOR from any source that is not
one of the account's known-good pairs are dropped, so the guessers learn nothing more and the
real owner keeps registering. Protection lasts ``base`` seconds (the suspension time) and
escalates like a blacklist ban when the account is attacked again soon after
(``escalation.ban_length``: base × escalation^(level-1), capped).

The distinct-sources window and the escalation history are exactly the blacklist's per-source
spraying bookkeeping with the roles swapped (key: the account, items: the sources), so they are
kept by an ``escalation.Blacklist``. Everything is bounded by ``cap`` accounts (LRU); times are
arguments.
"""

from __future__ import annotations

from typing import Any

from .escalation import Blacklist, ban_length
from .lru import LruTable

# An ended protection stays listed this long, until expired() reports it (for its event).
ENDED_GRACE = 3600.0
MAX_UNREPORTED = 10_000


class AccountProtection:
    """Accounts under protection (aor -> until, level) and the failures that lead there."""

    __slots__ = ("_history", "_protected", "_ended")

    def __init__(self, cap: int) -> None:
        self._history = Blacklist(cap)
        self._protected: LruTable[str, tuple[float, int]] = LruTable(cap)
        self._ended: list[str] = []

    @property
    def tables(self) -> dict[str, LruTable[Any, Any]]:
        """The underlying tables by name (for stats)."""
        history = self._history.tables
        return {"account_sources": history["spray"],
                "account_escalation": history["escalation"],
                "account_protected": self._protected}

    def __len__(self) -> int:
        return len(self._protected)

    def failure(self, now: float, src: str, aor: str, *, threshold: int, window: float,
                base: float, escalation: float, max_time: float, decay: float
                ) -> tuple[int, int] | None:
        """Count a proven failure of `src` on `aor`; (seconds, distinct sources) when it puts
        the account under protection, else None (also while it is protected already)."""
        if self.until(now, aor) is not None:
            return None
        distinct = self._history.failure(now, aor, src, threshold, window)
        if not distinct:
            return None
        level = self._history.next_level(now, aor)
        seconds = ban_length(level, base, escalation, max_time)
        until = now + seconds
        self._history.record_ban(now, aor, level, until, decay)
        if self._protected.peek(aor, now) is not None and len(self._ended) < MAX_UNREPORTED:
            self._ended.append(aor)  # the last one ended unreported: its event comes first
        self._protected.put(aor, (until, level), until + ENDED_GRACE, now)
        return seconds, distinct

    def success(self, src: str, aor: str) -> None:
        """A proven success of (src, aor): that source no longer counts against the account."""
        self._history.success(aor, src)

    def until(self, now: float, aor: str) -> float | None:
        """When the account's protection ends, or None when it is not protected."""
        if not self._protected:
            return None
        entry = self._protected.peek(aor, now)
        if entry is None or entry[0] <= now:
            return None
        return entry[0]

    def level(self, now: float, aor: str) -> int:
        """The escalation level of the account's current (or last) protection, 0 if none."""
        entry = self._protected.peek(aor, now)
        return 0 if entry is None else entry[1]

    def lift(self, now: float, aor: str) -> bool:
        """Operator: end the account's protection and forget its history; True if it was
        protected."""
        was = self.until(now, aor) is not None
        self._protected.discard(aor)
        self._history.forget(aor)
        return was

    def expired(self, now: float, limit: int = 1000) -> list[str]:
        """Accounts whose protection has ended since the last call (for an event each)."""
        ended, self._ended = self._ended, []
        for aor, (until, _level), _ in self._protected.items(now):
            if len(ended) >= limit:
                break
            if until <= now:
                ended.append(aor)
                self._protected.discard(aor)
        return ended

    def active(self, now: float) -> list[tuple[str, float, int]]:
        """(aor, until, level) of every account under protection."""
        return [(aor, until, level) for aor, (until, level), _ in self._protected.items(now)
                if until > now]

    def export(self, now: float) -> dict[str, Any]:
        """Plain-data snapshot, times relative to now."""
        return {"protected": [[aor, round(until - now, 3), level]
                              for aor, until, level in self.active(now)],
                "history": self._history.export(now)}

    def restore(self, now: float, data: dict[str, Any], window: float, decay: float) -> None:
        """Load a snapshot made by export()."""
        for aor, remaining, level in data.get("protected", ()):
            if float(remaining) > 0:
                until = now + float(remaining)
                self._protected.put(str(aor), (until, int(level)), until + ENDED_GRACE, now)
        self._history.restore(now, data.get("history", {}), window, decay)
