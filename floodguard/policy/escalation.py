"""The escalation tier of the dynamic blacklist: spraying and repeat offenders, bans that grow
with each repeat, and the table of every ban in force (of any kind: the CLI's ``blacklist``
lists them all).

Triggers (all fed only with proven failures: the guard's proof token or a TCP connection):

* spraying / enumeration — proven failures on ``auth_failures`` distinct AORs from one source
  within ``window`` seconds. A later success for an AOR from that source takes the AOR out of the
  window again: a user who mistyped and then got in is not part of a spray. This keeps a NAT full
  of phones, a few of them mistyping, from adding up to a ban — unless ``auth_failures`` of them
  fail before any of them succeeds, which is what spraying looks like;
* repeat offender — a second suspension of the source within ``window`` seconds.

A blacklist ban lasts ``ban_time``, multiplied by ``escalation`` for each further blacklist ban
of the same source, capped at ``max_ban_time``. The escalation level decays: once ``decay``
seconds (default ``max_ban_time``) have passed since the source's last blacklist ban *ended*, the
next one starts from ``ban_time`` again.

``BanTable`` holds the active bans of every kind. It is kept apart from the per-source LRUs so
that evicting flood state can never lift a ban; it is bounded too, but only real (proven or
manual) bans enter it, and when it is full the ban closest to expiry is dropped — the kernel set
still holds it until its own timeout.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Any

from .lru import LruTable

KIND_SUSPEND = "suspend"
KIND_BLACKLIST = "blacklist"
KIND_MANUAL = "manual"
KINDS = (KIND_SUSPEND, KIND_BLACKLIST, KIND_MANUAL)


@dataclass(frozen=True, slots=True)
class BanRecord:
    """An active ban: until is monotonic time; level is the blacklist escalation level
    (1 for a first blacklist ban, 0 for suspensions and manual bans)."""

    ip: str
    until: float
    reason: str
    kind: str
    aor: str | None = None
    failures: int = 0
    level: int = 0

    def remaining(self, now: float) -> float:
        """Seconds left (<= 0 once over)."""
        return self.until - now


class BanTable:
    """Active bans by IP, bounded; expired bans vanish lazily."""

    __slots__ = ("_bans", "_heap", "cap", "evicted", "expired")

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError("cap must be >= 1")
        self._bans: dict[str, BanRecord] = {}
        # (until, ip) min-heap with lazy deletion: an entry is valid only while it matches
        # the record in _bans.
        self._heap: list[tuple[float, str]] = []
        self.cap = cap
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._bans)

    def get(self, ip: str, now: float) -> BanRecord | None:
        """The live ban of ip, None if none."""
        rec = self._bans.get(ip)
        if rec is None:
            return None
        if rec.until <= now:
            del self._bans[ip]
            self.expired += 1
            return None
        return rec

    def _valid(self, until: float, ip: str) -> bool:
        rec = self._bans.get(ip)
        return rec is not None and rec.until == until

    def _drop_expired(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= now:
            until, ip = heapq.heappop(heap)
            if self._valid(until, ip):
                del self._bans[ip]
                self.expired += 1

    def _compact(self) -> None:
        if len(self._heap) > 2 * len(self._bans) + 64:
            self._heap = [(r.until, ip) for ip, r in self._bans.items()]
            heapq.heapify(self._heap)

    def add(self, rec: BanRecord, now: float) -> BanRecord | None:
        """Store rec (replacing any ban of the same IP). When the table is full the ban closest
        to expiry is dropped and returned — possibly rec itself."""
        self._drop_expired(now)
        heap = self._heap
        if rec.ip not in self._bans and len(self._bans) >= self.cap:
            while heap and not self._valid(*heap[0]):
                heapq.heappop(heap)
            if heap and heap[0][0] < rec.until:
                _, ip = heapq.heappop(heap)
                victim = self._bans.pop(ip)
            else:
                victim = rec
            self.evicted += 1
            if victim is rec:
                return rec
        else:
            victim = None
        self._bans[rec.ip] = rec
        heapq.heappush(heap, (rec.until, rec.ip))
        self._compact()
        return victim

    def remove(self, ip: str) -> BanRecord | None:
        """Drop the ban of ip (returns it, live or not)."""
        rec = self._bans.pop(ip, None)
        self._compact()
        return rec

    def active(self, now: float) -> list[BanRecord]:
        """Live bans, soonest to expire first."""
        self._drop_expired(now)
        return sorted(
            (r for r in self._bans.values() if r.until > now), key=lambda r: (r.until, r.ip)
        )

    def ips(self) -> list[str]:
        """Every stored IP (live or not yet purged)."""
        return list(self._bans)


def ban_length(level: int, ban_time: float, escalation: float, max_ban_time: float) -> int:
    """Seconds of a blacklist ban at ``level`` (1 = first): ban_time * escalation**(level-1),
    capped at max_ban_time."""
    try:
        seconds = ban_time * escalation ** max(level - 1, 0)
    except OverflowError:
        seconds = math.inf
    return int(math.ceil(min(seconds, max_ban_time)))


class Blacklist:
    """Per-source spray windows, suspension history and escalation history (all bounded)."""

    __slots__ = ("_spray", "_suspended", "_escalation")

    def __init__(self, cap: int) -> None:
        # source -> {aor: time of its last proven failure}; deadline = last failure + window
        self._spray: LruTable[str, dict[str, float]] = LruTable(cap)
        # source -> time of its last suspension; deadline = that + window
        self._suspended: LruTable[str, float] = LruTable(cap)
        # source -> (level, until of its last blacklist ban); deadline = until + decay
        self._escalation: LruTable[str, tuple[int, float]] = LruTable(cap)

    @property
    def tables(self) -> dict[str, LruTable[Any, Any]]:
        """The underlying tables by name (for stats)."""
        return {
            "spray": self._spray,
            "suspension_history": self._suspended,
            "escalation": self._escalation,
        }

    def failure(self, now: float, src: str, aor: str, threshold: int, window: float) -> int:
        """Record a proven failure on aor; returns the number of distinct AORs when it reaches
        ``threshold`` within ``window`` (the window is then cleared), else 0."""
        aors = self._spray.get(src, now)
        if aors is None:
            aors = {}
        else:
            horizon = now - window
            stale = [a for a, t in aors.items() if t <= horizon]
            for a in stale:
                del aors[a]
        aors.pop(aor, None)  # re-insert so the dict stays ordered by last failure
        aors[aor] = now
        if len(aors) >= threshold:
            self._spray.discard(src)
            return len(aors)
        self._spray.put(src, aors, now + window, now)
        return 0

    def success(self, src: str, aor: str) -> None:
        """A proven success for (src, aor) takes aor out of src's spray window."""
        aors = self._spray.peek(src, -math.inf)
        if aors:
            aors.pop(aor, None)

    def suspension(self, now: float, src: str, window: float) -> bool:
        """Record a suspension of src; True when src was already suspended within ``window``
        (a repeat offender; the history is then cleared)."""
        last = self._suspended.get(src, now)
        if last is not None and now - last < window:
            self._suspended.discard(src)
            return True
        self._suspended.put(src, now, now + window, now)
        return False

    def next_level(self, now: float, src: str) -> int:
        """Escalation level the next blacklist ban of src gets (1 after decay)."""
        prev = self._escalation.get(src, now)
        return 1 if prev is None else prev[0] + 1

    def record_ban(self, now: float, src: str, level: int, until: float, decay: float) -> None:
        """Remember a blacklist ban for escalation; also ends the offence windows of src."""
        self._escalation.put(src, (level, until), until + decay, now)
        self._spray.discard(src)
        self._suspended.discard(src)

    def forget(self, src: str) -> None:
        """Operator forgiveness: drop all history of src."""
        self._spray.discard(src)
        self._suspended.discard(src)
        self._escalation.discard(src)

    def export(self, now: float) -> dict[str, Any]:
        """Plain-data snapshot; times relative to now (negative = in the past)."""
        return {
            "spray": [
                [s, [[a, _rel(t - now)] for a, t in aors.items()]]
                for s, aors, _ in self._spray.items(now)
            ],
            "suspensions": [[s, _rel(t - now)] for s, t, _ in self._suspended.items(now)],
            "escalation": [
                [s, level, _rel(until - now)]
                for s, (level, until), _ in self._escalation.items(now)
            ],
        }

    def restore(self, now: float, data: dict[str, Any], window: float, decay: float) -> None:
        """Load a snapshot made by export(), re-deriving deadlines from the current settings."""
        for src, pairs in data.get("spray", ()):
            aors = {str(a): now + float(rel) for a, rel in pairs if float(rel) > -window}
            if aors:
                self._spray.put(str(src), aors, max(aors.values()) + window)
        for src, rel in data.get("suspensions", ()):
            when = now + float(rel)
            if when + window > now:
                self._suspended.put(str(src), when, when + window)
        for src, level, rel in data.get("escalation", ()):
            until = now + float(rel)
            if until + decay > now and int(level) > 0:
                self._escalation.put(str(src), (int(level), until), until + decay)


def _rel(seconds: float) -> float:
    # Millisecond precision keeps snapshots stable through a restore/export round trip.
    return round(seconds, 3)
