"""Proof of address: nonces the registrar issued to each source, and authenticated REGISTERs
waiting for their answer.

A challenge (401/407) going out to address S carries nonces; only a host that really receives
packets at S can learn them. A REGISTER from S presenting one of those nonces is therefore truly
from S, and its answer (401/403/200) is evidence about S — a spoofed packet cannot produce it.

Both tables are flat bounded LRUs keyed by tuples, so one busy source costs one entry per
nonce or transaction, and a flood of distinct sources can only push out the oldest entries.
Losing an entry only means a later answer is not counted — the safe direction.
"""

from __future__ import annotations

from .lru import LruTable

# The AOR is kept for counting; a parser-capped header can still be long, so cap what we keep.
MAX_AOR_LEN = 256


class NonceTable:
    """(source, nonce) pairs issued by the registrar, each kept for ``ttl`` seconds."""

    __slots__ = ("_table", "ttl")

    def __init__(self, cap: int, ttl: float = 600.0) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        self._table: LruTable[tuple[str, str], bool] = LruTable(cap)
        self.ttl = float(ttl)

    @property
    def table(self) -> LruTable[tuple[str, str], bool]:
        """The underlying table (sizes and counters for stats)."""
        return self._table

    def issue(self, now: float, src: str, nonce: str) -> None:
        """Remember that ``nonce`` was sent to ``src`` (re-issuing refreshes it)."""
        self._table.put((src, nonce), True, now + self.ttl, now)

    def issued(self, now: float, src: str, nonce: str) -> bool:
        """Was ``nonce`` sent to ``src`` within the last ``ttl`` seconds?"""
        return self._table.peek((src, nonce), now) is not None

    def __len__(self) -> int:
        return len(self._table)


class PendingTable:
    """Authenticated REGISTERs from a proven address, keyed (source, Call-ID, CSeq number)."""

    __slots__ = ("_table", "ttl")

    def __init__(self, cap: int, ttl: float = 32.0) -> None:
        # 32 s is Timer F / 64*T1 of RFC 3261: a non-INVITE transaction is over by then.
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        self._table: LruTable[tuple[str, str, int], str] = LruTable(cap)
        self.ttl = float(ttl)

    @property
    def table(self) -> LruTable[tuple[str, str, int], str]:
        """The underlying table (sizes and counters for stats)."""
        return self._table

    def add(self, now: float, src: str, call_id: str, cseq: int, aor: str) -> None:
        """Remember the request (a retransmission just refreshes it)."""
        self._table.put((src, call_id, cseq), aor[:MAX_AOR_LEN], now + self.ttl, now)

    def take(self, now: float, src: str, call_id: str, cseq: int) -> str | None:
        """The AOR of the matching live request, removing it (a retransmitted answer then
        finds nothing and is not counted twice); None when there is no such request."""
        return self._table.pop((src, call_id, cseq), now)

    def __len__(self) -> int:
        return len(self._table)
