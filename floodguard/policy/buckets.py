"""Token buckets: per source (all requests), per source + REGISTER, per gateway group, global.

A bucket holds up to ``burst`` tokens and gains ``rate`` tokens per second; a request passes when
a whole token is there and takes it. Time is passed in (monotonic seconds); nothing here reads a
clock.

Per-source state lives in one bounded LRU (``SourceLimiter``): one record per source holds both
its REGISTER and all-request tokens plus a small caller-defined ``tag`` (the engine caches the
source's allow/gateway class there), so the hot path costs one table lookup. A record idle long
enough to have refilled completely is indistinguishable from a fresh one, so it expires after
that time and the table only holds sources seen in the last few seconds.
"""

from __future__ import annotations

from .lru import LruTable

# Result codes of SourceLimiter.admit.
PASS = 0
OVER_REGISTER = 1
OVER_SIP = 2


class TokenBucket:
    """One token bucket; starts full."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float = 0.0) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        """Take one token if there is one; False means over the limit."""
        elapsed = now - self.stamp
        tokens = self.tokens
        if elapsed > 0:
            tokens += elapsed * self.rate
            if tokens > self.burst:
                tokens = self.burst
            self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False

    def reconfigure(self, rate: float, burst: float) -> None:
        """New rate/burst, keeping the tokens (clamped to the new burst)."""
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        if self.tokens > self.burst:
            self.tokens = self.burst


class SourceTokens:
    """Per-source record: REGISTER tokens, all-request tokens, last refill, caller tag."""

    __slots__ = ("reg", "sip", "stamp", "tag", "gen")

    def __init__(self, reg: float, sip: float, stamp: float, tag: int, gen: int) -> None:
        self.reg = reg
        self.sip = sip
        self.stamp = stamp
        self.tag = tag
        self.gen = gen


class SourceLimiter:
    """Per-source REGISTER and all-request buckets in one bounded, expiring LRU table."""

    __slots__ = (
        "_table", "reg_rate", "reg_burst", "sip_rate", "sip_burst", "idle_ttl",
    )

    def __init__(
        self,
        register_rate: float,
        register_burst: float,
        sip_rate: float,
        sip_burst: float,
        cap: int,
    ) -> None:
        self._table: LruTable[str, SourceTokens] = LruTable(cap)
        self.reg_rate = self.reg_burst = self.sip_rate = self.sip_burst = 0.0
        self.idle_ttl = 0.0
        self.configure(register_rate, register_burst, sip_rate, sip_burst)

    def configure(
        self, register_rate: float, register_burst: float, sip_rate: float, sip_burst: float
    ) -> None:
        """New limits; existing records keep their tokens, clamped when next used."""
        if min(register_rate, sip_rate) <= 0 or min(register_burst, sip_burst) < 1:
            raise ValueError("rates must be > 0 and bursts >= 1")
        self.reg_rate = float(register_rate)
        self.reg_burst = float(register_burst)
        self.sip_rate = float(sip_rate)
        self.sip_burst = float(sip_burst)
        # After this long idle both buckets are full again: the record carries no information.
        self.idle_ttl = max(self.reg_burst / self.reg_rate, self.sip_burst / self.sip_rate)

    @property
    def table(self) -> LruTable[str, SourceTokens]:
        """The underlying table (sizes and counters for stats)."""
        return self._table

    def record(self, now: float, src: str) -> SourceTokens | None:
        """The live record of src (refreshing its idle deadline), None if unknown."""
        return self._table.get_refresh(src, now, self.idle_ttl)

    def add(self, now: float, src: str, tag: int, gen: int) -> SourceTokens:
        """A fresh record (full buckets) for src."""
        rec = SourceTokens(self.reg_burst, self.sip_burst, now, tag, gen)
        self._table.put(src, rec, now + self.idle_ttl, now)
        return rec

    def admit(self, now: float, rec: SourceTokens, is_register: bool) -> int:
        """Charge one request to rec: PASS, OVER_REGISTER or OVER_SIP.

        A REGISTER needs a token in both buckets and takes from both only when it passes, so a
        dropped request never eats into the other limit.
        """
        elapsed = now - rec.stamp
        reg = rec.reg
        sip = rec.sip
        if elapsed > 0:
            reg += elapsed * self.reg_rate
            if reg > self.reg_burst:
                reg = self.reg_burst
            sip += elapsed * self.sip_rate
            if sip > self.sip_burst:
                sip = self.sip_burst
            rec.stamp = now
        elif reg > self.reg_burst or sip > self.sip_burst:  # limits lowered by a reload
            reg = min(reg, self.reg_burst)
            sip = min(sip, self.sip_burst)
        if is_register and reg < 1.0:
            rec.reg = reg
            rec.sip = sip
            return OVER_REGISTER
        if sip < 1.0:
            rec.reg = reg
            rec.sip = sip
            return OVER_SIP
        rec.reg = reg - 1.0 if is_register else reg
        rec.sip = sip - 1.0
        return PASS

    def __len__(self) -> int:
        return len(self._table)


class GatewayLimiter:
    """One shared bucket per named gateway group (``cps`` per second, burst max(cps, 1))."""

    __slots__ = ("names", "_buckets")

    def __init__(self, groups: list[tuple[str, float]], now: float = 0.0) -> None:
        self.names: tuple[str, ...] = ()
        self._buckets: list[TokenBucket] = []
        self.configure(groups, now)

    def configure(self, groups: list[tuple[str, float]], now: float = 0.0) -> None:
        """(name, cps) per group, in index order; groups keeping their name keep their tokens."""
        old = dict(zip(self.names, self._buckets, strict=True))
        buckets = []
        for name, cps in groups:
            bucket = old.get(name)
            if bucket is None:
                bucket = TokenBucket(cps, max(cps, 1.0), now)
            else:
                bucket.reconfigure(cps, max(cps, 1.0))
            buckets.append(bucket)
        self.names = tuple(name for name, _ in groups)
        self._buckets = buckets

    def take(self, now: float, index: int) -> bool:
        """Charge one request to group ``index``."""
        return self._buckets[index].take(now)
