"""A bounded, expiring LRU table: the storage behind every per-source table of the policy.

Each entry has a deadline; an entry past its deadline is gone (removed lazily when looked up, and
swept from the cold end when new entries arrive or ``sweep`` is called). When the table reaches
its cap, inserting a new key evicts the least recently used entry. So no flood of distinct keys
can grow it beyond ``cap`` entries, whatever the deadlines say.

Order is recency of ``get``/``put`` (``peek`` does not reorder). Tables whose deadlines are
refreshed on every touch with one fixed TTL therefore keep their oldest deadlines at the cold
end, which is what makes sweeping from that end cheap.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# Entries checked at the cold end on each insert of a new key: keeps expired entries from
# lingering under steady traffic at a fixed, tiny cost.
_SWEEP_ON_INSERT = 2


# An entry is a two-item list [deadline, value]: a list is several times cheaper to create than
# a slotted object, and an insert happens for every packet of a flood from new sources.
_DEADLINE = 0
_VALUE = 1


class LruTable(Generic[K, V]):
    """Map with a hard size cap (LRU eviction) and per-entry deadlines (lazy expiry)."""

    __slots__ = ("_data", "cap", "evicted", "expired")

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError("cap must be >= 1")
        self._data: OrderedDict[K, list[Any]] = OrderedDict()
        self.cap = cap
        self.evicted = 0  # entries pushed out by the cap while still live
        self.expired = 0  # entries removed because their deadline passed

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        # Presence only, expired or not; use peek() for a live answer.
        return key in self._data

    def get(self, key: K, now: float) -> V | None:
        """The live value for key (and mark it recently used), else None."""
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[_DEADLINE] <= now:
            del self._data[key]
            self.expired += 1
            return None
        self._data.move_to_end(key)
        return entry[_VALUE]

    def get_refresh(self, key: K, now: float, ttl: float) -> V | None:
        """Like get(), and push the deadline to now + ttl (idle-expiry tables)."""
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[_DEADLINE] <= now:
            del self._data[key]
            self.expired += 1
            return None
        entry[_DEADLINE] = now + ttl
        self._data.move_to_end(key)
        return entry[_VALUE]

    def peek(self, key: K, now: float) -> V | None:
        """The live value for key without changing its recency, else None."""
        entry = self._data.get(key)
        if entry is None or entry[_DEADLINE] <= now:
            return None
        return entry[_VALUE]

    def deadline(self, key: K) -> float | None:
        """The stored deadline of key (live or not), None when absent."""
        entry = self._data.get(key)
        return None if entry is None else entry[_DEADLINE]

    def put(self, key: K, value: V, deadline: float, now: float | None = None) -> None:
        """Insert or replace key; evicts the least recently used entry when over the cap.

        With ``now`` given, a couple of expired entries at the cold end are dropped first.
        """
        data = self._data
        entry = data.get(key)
        if entry is not None:
            entry[_VALUE] = value
            entry[_DEADLINE] = deadline
            data.move_to_end(key)
            return
        if now is not None and data and len(data) < self.cap:
            # When full, the eviction below removes the cold end anyway.
            self._sweep_front(now, _SWEEP_ON_INSERT)
        data[key] = [deadline, value]
        if len(data) > self.cap:
            _, cold = data.popitem(last=False)
            if now is not None and cold[_DEADLINE] <= now:
                self.expired += 1
            else:
                self.evicted += 1

    def pop(self, key: K, now: float) -> V | None:
        """Remove key and return its live value (None if absent or expired)."""
        entry = self._data.pop(key, None)
        if entry is None:
            return None
        if entry[_DEADLINE] <= now:
            self.expired += 1
            return None
        return entry[_VALUE]

    def discard(self, key: K) -> None:
        """Remove key if present."""
        self._data.pop(key, None)

    def _sweep_front(self, now: float, limit: int) -> int:
        data = self._data
        removed = 0
        while removed < limit and data:
            key = next(iter(data))
            if data[key][_DEADLINE] > now:
                break
            del data[key]
            removed += 1
        self.expired += removed
        return removed

    def sweep(self, now: float, limit: int = 1000) -> int:
        """Drop up to ``limit`` expired entries from the cold end; returns how many went.

        Stops at the first live entry, so on tables with mixed deadlines some expired entries
        may stay until they are looked up or pushed out by the cap.
        """
        return self._sweep_front(now, limit)

    def purge(self, now: float) -> int:
        """Drop every expired entry (a full scan: for snapshots and tests, not the hot path)."""
        dead = [k for k, e in self._data.items() if e[_DEADLINE] <= now]
        for key in dead:
            del self._data[key]
        self.expired += len(dead)
        return len(dead)

    def items(self, now: float) -> Iterator[tuple[K, V, float]]:
        """Live (key, value, deadline) triples, least recently used first."""
        for key, entry in list(self._data.items()):
            if entry[_DEADLINE] > now:
                yield key, entry[_VALUE], entry[_DEADLINE]

    def clear(self) -> None:
        """Forget everything."""
        self._data.clear()
