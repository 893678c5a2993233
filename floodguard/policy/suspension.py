"""VOS3000-style endpoint suspension: consecutive proven failures -> the source is suspended.

Two consecutive-failure counters are kept, both fed only with *proven* failures (see nonces.py):

* per (source, AOR): one account failing again and again from one address — a password being
  guessed, or a phone stuck with a wrong password;
* per source: consecutive failures from the address whatever the account, with no success from
  that address in between — guessing that rotates accounts to dodge the first counter.

A success for (S, AOR) resets both the (S, AOR) counter and the per-source counter. So behind a
NAT (a call centre with 500 phones on one address) a few phones mistyping never add up while
the others keep registering successfully: every success from the address clears the per-source
run. The source is suspended when either counter reaches ``register_retry``; both counters that
triggered are cleared then, so after the suspension is lifted the count starts again.

Counters are forgotten after ``ttl`` seconds without a new failure (default one hour, a
documented choice: VOS3000 does not age them, but a single typo yesterday should not count
today). Both tables are bounded LRUs.

A *shared-capable* source (one holding a known-good pair, or a ``[[gateway]]`` member: see
pairs.py) is counted by ``failure_pair``: per (source, AOR) only, so a phone with a stale
password behind an office NAT suspends its own endpoint, never its neighbours.
"""

from __future__ import annotations

from typing import Any

from .lru import LruTable


class SuspensionCounters:
    """Consecutive proven-failure counters per (source, AOR) and per source."""

    __slots__ = ("_by_source", "_by_aor", "ttl")

    def __init__(self, cap: int, ttl: float = 3600.0) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        self._by_source: LruTable[str, int] = LruTable(cap)
        self._by_aor: LruTable[tuple[str, str], int] = LruTable(cap)
        self.ttl = float(ttl)

    @property
    def by_source(self) -> LruTable[str, int]:
        """Per-source counters (for stats)."""
        return self._by_source

    @property
    def by_aor(self) -> LruTable[tuple[str, str], int]:
        """Per-(source, AOR) counters (for stats)."""
        return self._by_aor

    def counts(self, now: float, src: str, aor: str) -> tuple[int, int]:
        """Current (per-AOR, per-source) consecutive failures."""
        return (
            self._by_aor.peek((src, aor), now) or 0,
            self._by_source.peek(src, now) or 0,
        )

    def failure(self, now: float, src: str, aor: str, retry: int) -> int:
        """Count one proven failure; returns the count that reached ``retry`` (then both
        triggering counters are cleared), else 0."""
        key = (src, aor)
        deadline = now + self.ttl
        per_aor = (self._by_aor.get(key, now) or 0) + 1
        per_src = (self._by_source.get(src, now) or 0) + 1
        if per_aor >= retry or per_src >= retry:
            self._by_aor.discard(key)
            self._by_source.discard(src)
            return max(per_aor, per_src)
        self._by_aor.put(key, per_aor, deadline, now)
        self._by_source.put(src, per_src, deadline, now)
        return 0

    def failure_pair(self, now: float, src: str, aor: str, retry: int) -> int:
        """Count one proven failure of a shared-capable source: per (src, aor) only; returns
        the count that reached ``retry`` (the counter is then cleared), else 0."""
        key = (src, aor)
        per_aor = (self._by_aor.get(key, now) or 0) + 1
        if per_aor >= retry:
            self._by_aor.discard(key)
            return per_aor
        self._by_aor.put(key, per_aor, now + self.ttl, now)
        return 0

    def success(self, src: str, aor: str) -> None:
        """A proven success for (src, aor): clears its counter and the source's run."""
        self._by_aor.discard((src, aor))
        self._by_source.discard(src)

    def forget_source(self, src: str) -> None:
        """Clear the per-source run (operator unban). Per-AOR counters age out on their own."""
        self._by_source.discard(src)

    def export(self, now: float) -> dict[str, Any]:
        """Plain-data snapshot with remaining lifetimes."""
        return {
            "source": [[s, n, _rel(d - now)] for s, n, d in self._by_source.items(now)],
            "aor": [[s, a, n, _rel(d - now)] for (s, a), n, d in self._by_aor.items(now)],
        }

    def restore(self, now: float, data: dict[str, Any]) -> None:
        """Load a snapshot made by export() (entries merge over the current ones)."""
        for src, count, remaining in data.get("source", ()):
            if remaining > 0 and count > 0:
                self._by_source.put(str(src), int(count), now + float(remaining))
        for src, aor, count, remaining in data.get("aor", ()):
            if remaining > 0 and count > 0:
                self._by_aor.put((str(src), str(aor)), int(count), now + float(remaining))


def _rel(seconds: float) -> float:
    # Millisecond precision keeps snapshots stable through a restore/export round trip.
    return round(seconds, 3)
