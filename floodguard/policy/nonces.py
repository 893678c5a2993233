"""Nonces the registrar issued, and authenticated REGISTERs waiting for their answer.

A registrar nonce proves nothing about who holds it: Kamailio's stock auth module and Asterisk
PJSIP give every client challenged in the same second the same nonce. Proof of address is the
guard's token (floodguard.sip.proof) or a TCP connection; the nonce table only notices a
registrar that hands one nonce to several clients, so the operator can be told to fix it.
Authenticated REGISTERs from a proven source wait in the pending table for their answer
(401/403/200), which is then evidence about that source.

Both tables are flat bounded LRUs keyed by tuples, so one busy source costs one entry per
nonce or transaction, and a flood of distinct sources can only push out the oldest entries.
Losing an entry only means a later answer is not counted — the safe direction.
"""

from __future__ import annotations

from .lru import LruTable

# The AOR is kept for counting; a parser-capped header can still be long, so cap what we keep.
MAX_AOR_LEN = 256


class NonceTable:
    """Nonce -> the client it was first issued to, each kept for ``ttl`` seconds."""

    __slots__ = ("_table", "ttl")

    def __init__(self, cap: int, ttl: float = 600.0) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be > 0")
        self._table: LruTable[str, str] = LruTable(cap)
        self.ttl = float(ttl)

    @property
    def table(self) -> LruTable[str, str]:
        """The underlying table (sizes and counters for stats)."""
        return self._table

    def issue(self, now: float, src: str, nonce: str) -> bool:
        """Remember that ``nonce`` was sent to ``src``; True when it was already sent to
        another client within the last ``ttl`` seconds (a shared nonce)."""
        first = self._table.peek(nonce, now)
        if first is None:
            self._table.put(nonce, src, now + self.ttl, now)
            return False
        return first != src

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
