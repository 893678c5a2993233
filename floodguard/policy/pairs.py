"""Known-good (source, AOR) pairs and per-endpoint suspensions: stop the endpoint, not the NAT.

An office NAT or a carrier's CGNAT puts many phones behind one address, so a whole-address
suspension for one phone's failures takes all its neighbours off the air. VOS3000 blocks an
*endpoint* ("by IP address and/or username"); this module gives the engine what it needs to do
the same:

* **Known-good pairs.** A (source, AOR) whose REGISTER was answered 2xx — a *proven* success,
  under the same proof rules as every counted outcome (the guard's token in the digest opaque, a
  TCP connection, a TLS report), so a spoofed packet can never create one — is known-good until
  twice its granted expiry (at least its registration's lifetime). A source holding at least one
  live known-good pair is *shared-capable* (``shared``): the engine then counts its failures per
  (source, AOR) only and suspends the failing pair instead of the address. ``[[gateway]]``
  members are shared-capable from the start (the engine's decision, not this table's).
* **Pair suspensions.** A suspended pair's REGISTERs are dropped by the guard (no answer, as
  VOS3000 does) until the suspension ends; the other AORs of that source pass untouched. A
  pair suspended again within ``window`` seconds of its previous suspension's end gets the next
  escalation level (``suspend_time * escalation ** (level - 1)``, capped); nothing of a pair
  ever escalates into an address ban. ``ended`` pops the suspensions that are over, for the
  guard's end event.

Pure: no I/O, no clock. Every table is bounded: pairs and their escalation history are LRUs;
the suspensions are capped and, when full, the one closest to its end is dropped (counted in
``evicted``; losing it only lets that endpoint's REGISTERs be answered again — the same
direction as the end of a suspension).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .escalation import ban_length
from .lru import LruTable
from .nonces import MAX_AOR_LEN

REASON_PAIR = "consecutive-failures"


def aor_key(aor: str) -> str:
    """An AOR as the policy keys it: lower-cased, at most MAX_AOR_LEN characters."""
    return aor.lower()[:MAX_AOR_LEN]


@dataclass(frozen=True, slots=True)
class PairBan:
    """An active per-endpoint suspension: REGISTERs for ``aor`` from ``src`` are dropped until
    ``until`` (monotonic). ``level``: 1 for a first suspension, +1 for each repeat."""

    src: str
    aor: str
    until: float
    failures: int = 0
    level: int = 1
    reason: str = REASON_PAIR

    def remaining(self, now: float) -> float:
        """Seconds left (<= 0 once over)."""
        return self.until - now


class Pairs:
    """Known-good pairs (with the per-source summary that makes a source shared-capable),
    pair suspensions and their escalation history."""

    __slots__ = ("_known", "_sources", "_bans", "_by_src", "_heap", "_history", "ban_cap",
                 "evicted", "ended_count")

    def __init__(self, cap: int, ban_cap: int | None = None) -> None:
        # (src, aor) -> until of the pair's known-good mark; deadline = until
        self._known: LruTable[tuple[str, str], float] = LruTable(cap)
        # src -> the latest until of any of its pairs; deadline = that until
        self._sources: LruTable[str, float] = LruTable(cap)
        # (src, aor) -> (level, until of its last suspension); deadline = until + window
        self._history: LruTable[tuple[str, str], tuple[int, float]] = LruTable(cap)
        self._bans: dict[tuple[str, str], PairBan] = {}
        # src -> how many of its endpoints are in _bans: the packet path's first, cheap test
        self._by_src: dict[str, int] = {}
        # (until, src, aor) min-heap with lazy deletion (valid while it matches _bans)
        self._heap: list[tuple[float, str, str]] = []
        self.ban_cap = ban_cap or cap
        self.evicted = 0
        self.ended_count = 0

    @property
    def tables(self) -> dict[str, LruTable[Any, Any]]:
        """The bounded LRU tables by name (for stats)."""
        return {"pairs": self._known, "pair_sources": self._sources,
                "pair_history": self._history}

    # ------------------------------------------------------------ known-good pairs

    def mark(self, now: float, src: str, aor: str, until: float) -> float:
        """A proven success for (src, aor): known-good until ``until`` (never shortened);
        returns the pair's until in force."""
        key = (src, aor)
        previous = self._known.peek(key, now)
        if previous is not None and previous > until:
            until = previous
        self._known.put(key, until, until, now)
        latest = self._sources.peek(src, now)
        if latest is None or latest < until:
            self._sources.put(src, until, until, now)
        else:
            self._sources.get(src, now)  # recently used
        return until

    def is_known(self, now: float, src: str, aor: str) -> bool:
        """Is (src, aor) a live known-good pair?"""
        return self._known.peek((src, aor), now) is not None

    def shared(self, now: float, src: str) -> bool:
        """Does src hold at least one live known-good pair (shared-capable)?"""
        return self._sources.peek(src, now) is not None

    def known_pairs(self, now: float) -> list[tuple[str, str, float]]:
        """(src, aor, remaining seconds) of every live known-good pair."""
        return [(src, aor, until - now) for (src, aor), until, _ in self._known.items(now)]

    # ------------------------------------------------------------ suspensions

    def source_suspended(self, src: str) -> bool:
        """Has src any endpoint suspension stored (live or not yet popped)? The packet path's
        cheap test (one lookup by address) before the AOR is read."""
        return src in self._by_src

    def _drop(self, key: tuple[str, str]) -> PairBan:
        ban = self._bans.pop(key)
        left = self._by_src[key[0]] - 1
        if left:
            self._by_src[key[0]] = left
        else:
            del self._by_src[key[0]]
        return ban

    def suspended(self, now: float, src: str, aor: str) -> PairBan | None:
        """The live suspension of (src, aor), None if none. An expired one stays until
        ``ended`` pops it (so its end is reported)."""
        ban = self._bans.get((src, aor))
        if ban is None or ban.until <= now:
            return None
        return ban

    def suspend(self, now: float, src: str, aor: str, failures: int, *, suspend_time: float,
                escalation: float, max_time: float, window: float) -> PairBan:
        """Suspend (src, aor). A pair suspended again within ``window`` seconds after its
        previous suspension ended gets the next level: ``suspend_time * escalation **
        (level - 1)`` seconds, capped at ``max(max_time, suspend_time)``."""
        key = (src, aor)
        previous = self._history.get(key, now)
        level = 1 if previous is None else previous[0] + 1
        seconds = ban_length(level, suspend_time, escalation, max(max_time, suspend_time))
        current = self._bans.get(key)
        until = now + seconds
        if current is not None and current.until > until:
            return current  # never shorten
        ban = PairBan(src, aor, until, failures, level)
        self._history.put(key, (level, until), until + window, now)
        self._store(ban)
        return ban

    def _store(self, ban: PairBan) -> None:
        key = (ban.src, ban.aor)
        bans = self._bans
        heap = self._heap
        if key not in bans and len(bans) >= self.ban_cap:
            while heap:
                until, src, aor = heapq.heappop(heap)
                victim = bans.get((src, aor))
                if victim is not None and victim.until == until:
                    self._drop((src, aor))
                    self.evicted += 1
                    break
        if key not in bans:
            self._by_src[ban.src] = self._by_src.get(ban.src, 0) + 1
        bans[key] = ban
        heapq.heappush(heap, (ban.until, ban.src, ban.aor))
        if len(heap) > 2 * len(bans) + 64:
            self._heap = [(b.until, b.src, b.aor) for b in bans.values()]
            heapq.heapify(self._heap)

    def restore_ban(self, now: float, ban: PairBan, window: float) -> None:
        """Put back a suspension saved elsewhere (snapshot, store row); no-op once over."""
        if ban.until <= now:
            return
        key = (ban.src, ban.aor)
        current = self._bans.get(key)
        if current is not None and current.until >= ban.until:
            return
        self._history.put(key, (ban.level, ban.until), ban.until + window, now)
        self._store(ban)

    def ended(self, now: float) -> list[PairBan]:
        """Pop the suspensions that are over (the guard's end hook), earliest first."""
        heap = self._heap
        bans = self._bans
        out: list[PairBan] = []
        while heap and heap[0][0] <= now:
            until, src, aor = heapq.heappop(heap)
            ban = bans.get((src, aor))
            if ban is not None and ban.until == until:
                out.append(self._drop((src, aor)))
        self.ended_count += len(out)
        return out

    def lift(self, src: str, aor: str | None = None) -> list[PairBan]:
        """Lift the suspension of (src, aor), or every suspension of src when aor is None,
        and forget their escalation history (operator forgiveness, the allow list)."""
        keys = [k for k in self._bans if k[0] == src and (aor is None or k[1] == aor)]
        lifted = [self._drop(k) for k in keys]
        for key in [k for k, _, _ in self._history.items(float("-inf"))
                    if k[0] == src and (aor is None or k[1] == aor)]:
            self._history.discard(key)
        return lifted

    def sources_suspended(self) -> list[str]:
        """Every source with a stored pair suspension."""
        return sorted(self._by_src)

    def active(self, now: float) -> list[PairBan]:
        """Live suspensions, soonest to end first."""
        return sorted((b for b in self._bans.values() if b.until > now),
                      key=lambda b: (b.until, b.src, b.aor))

    def __len__(self) -> int:
        return len(self._bans)

    # ------------------------------------------------------------ snapshots

    def export(self, now: float) -> dict[str, Any]:
        """Plain-data snapshot of the suspensions and their history (times relative to now).
        Known-good pairs are persisted by the guard in the store, not here."""
        return {
            "suspended": [[b.src, b.aor, _rel(b.until - now), b.failures, b.level]
                          for b in self.active(now)],
            "history": [[s, a, level, _rel(until - now)]
                        for (s, a), (level, until), _ in self._history.items(now)],
        }

    def rebuilt(self, now: float, data: object, window: float,
                is_allowed: Callable[[str], bool]) -> Pairs:
        """A new table for the engine's restore_state: suspensions and history from a snapshot
        (``data``, None for an older one without them; allow-listed sources dropped), this
        table's known-good pairs kept (they live in the store)."""
        pairs = Pairs(self._known.cap, self.ban_cap)
        if isinstance(data, dict):
            pairs.restore(now, data, window)
            for src in pairs.sources_suspended():
                if is_allowed(src):
                    pairs.lift(src)
        for src, aor, left in self.known_pairs(now):
            pairs.mark(now, src, aor, now + left)
        return pairs

    def restore(self, now: float, data: dict[str, Any], window: float) -> None:
        """Load a snapshot made by export()."""
        for src, aor, level, rel in data.get("history", ()):
            until = now + float(rel)
            if until + window > now and int(level) > 0:
                self._history.put((str(src), str(aor)), (int(level), until), until + window)
        for src, aor, left, failures, level in data.get("suspended", ()):
            if float(left) > 0:
                self.restore_ban(now, PairBan(str(src), str(aor), now + float(left),
                                              int(failures), int(level)), window)


def _rel(seconds: float) -> float:
    # Millisecond precision keeps snapshots stable through a restore/export round trip.
    return round(seconds, 3)
