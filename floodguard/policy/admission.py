"""Admission by measured registrar capacity: how many requests/s from unknown sources to let in.

The guard sees every request going in and every answer coming out, so it measures the
registrar's health continuously (``HealthMeter``, one per worker): how many admitted requests
were answered, how many never were (``ANSWER_TIMEOUT``), and how long answers took, apart for
known-good and unknown sources. ``Admission`` turns the workers' summed measurements into the
admission rate for unknown sources, additive increase / multiplicative decrease as adaptive
concurrency limiters do: it grows while answers stay fast and complete and the unknown sources
use most of what is let in, and it is cut when answers go missing or slow down. Known-good
sources and gateways are never metered by it (the kernel rules send them past the budget).

Pure: time is an argument; the supervisor enforces the rate in the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

ANSWER_TIMEOUT = 2.0  # seconds: an admitted request not answered by then counts as missing
MAX_OPEN = 50_000  # transactions held open per worker; more are counted, not timed
CALL_ID_KEPT = 64  # characters of a Call-ID kept in the table (an attacker's may be kilobytes)
# latency histogram bounds in milliseconds (the last bucket is everything above)
LATENCY_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
MIN_SAMPLE = 20  # answered+missing below this: too few to judge, hold the rate
GROWTH = 0.20  # share of the rate added per healthy step with demand, near the last cut
# far below the rate of the last cut (or before any), a healthy step in demand doubles the rate
# (TCP's slow start): a fresh host under attack reaches the registrar's capacity in seconds
SLOW_START = 0.5
CUT = 0.7  # the rate is multiplied by this when the registrar is unwell
BUSY = 0.8  # unknown sources' packets reaching the guard >= this share of the rate: in demand
QUEUEING = 0.25  # share of latency_ms at the p90 that shows the registrar's queue filling


def _bucket(ms: float) -> int:
    for i, bound in enumerate(LATENCY_MS):
        if ms <= bound:
            return i
    return len(LATENCY_MS)


_COUNTS = ("unknown", "known", "answered", "missing", "untimed", "queue_dropped")


@dataclass
class Health:
    """What the registrar did with admitted requests over an interval (summed over workers)."""

    seconds: float = 0.0
    unknown: int = 0  # packets from unknown sources that reached the guard (past the budget)
    known: int = 0
    queue_dropped: int = 0  # packets the guard's queue had no room for (the guard is the limit)
    answered: int = 0
    missing: int = 0
    untimed: int = 0  # admitted while MAX_OPEN transactions were already open
    latency: list[int] | None = None  # counts per LATENCY_MS bucket (+1 for above)

    def add_delta(self, before: dict[str, object] | None, after: dict[str, object]) -> None:
        """Add what one worker counted between two of its ``HealthMeter.totals()`` (all of
        ``after`` when there is no ``before`` or the worker restarted since)."""
        if before is not None and _num(after, "answered") < _num(before, "answered"):
            before = None  # a restarted worker counts from zero again
        for name in _COUNTS:
            setattr(self, name, getattr(self, name) + _num(after, name)
                    - (_num(before, name) if before is not None else 0))
        now_counts = _hist(after)
        then_counts = _hist(before) if before is not None else [0] * len(now_counts)
        mine = self.latency or [0] * len(now_counts)
        self.latency = [m + a - b for m, a, b in zip(mine, now_counts, then_counts, strict=True)]

    def p90_ms(self) -> float | None:
        """The 90th percentile answer time (the bucket's upper bound); None without answers."""
        counts = self.latency
        total = sum(counts) if counts else 0
        if not counts or total <= 0:
            return None
        seen = 0
        for i, count in enumerate(counts):
            seen += count
            if seen >= 0.9 * total:
                return float(LATENCY_MS[i]) if i < len(LATENCY_MS) else float("inf")
        return float("inf")

    def missing_share(self) -> float:
        judged = self.answered + self.missing
        return self.missing / judged if judged > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        p90 = self.p90_ms()
        return {"seconds": round(self.seconds, 2), "unknown": self.unknown, "known": self.known,
                "queue_dropped": self.queue_dropped,
                "answered": self.answered, "missing": self.missing,
                "p90_ms": None if p90 is None or p90 == float("inf") else p90}


def _num(data: dict[str, object] | None, name: str) -> int:
    value = data.get(name, 0) if data is not None else 0
    return value if isinstance(value, int) else 0


def _hist(data: dict[str, object] | None) -> list[int]:
    counts = data.get("latency") if data is not None else None
    size = len(LATENCY_MS) + 1
    if isinstance(counts, list) and len(counts) == size:
        return [c if isinstance(c, int) else 0 for c in counts]
    return [0] * size


class HealthMeter:
    """One worker's view of the registrar: open transactions, (client key, Call-ID, CSeq) ->
    admitted at, and cumulative counts since the worker started."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, str, int], float] = {}
        self.unknown = 0
        self.known = 0
        self.answered = 0
        self.missing = 0
        self.untimed = 0
        self.latency = [0] * (len(LATENCY_MS) + 1)

    def arrival(self, unknown: bool) -> None:
        """A client's packet reached the guard (the demand on the kernel's budget)."""
        if unknown:
            self.unknown += 1
        else:
            self.known += 1

    def request(self, now: float, key: str, call_id: str, cseq: int) -> None:
        """An admitted request is on its way to the registrar."""
        if len(self.open) >= MAX_OPEN:
            self.untimed += 1
            return
        # a retransmission keeps its first time
        self.open.setdefault((key, call_id[:CALL_ID_KEPT], cseq), now)

    def response(self, now: float, key: str, call_id: str, cseq: int) -> None:
        """The registrar gave ``key`` a final answer."""
        sent = self.open.pop((key, call_id[:CALL_ID_KEPT], cseq), None)
        if sent is None:
            return
        self.answered += 1
        self.latency[_bucket((now - sent) * 1000.0)] += 1

    def totals(self, now: float) -> dict[str, object]:
        """Cumulative counts; open transactions older than ANSWER_TIMEOUT become missing."""
        expired = [k for k, sent in self.open.items() if now - sent > ANSWER_TIMEOUT]
        for k in expired:
            del self.open[k]
        self.missing += len(expired)
        return {"unknown": self.unknown, "known": self.known, "answered": self.answered,
                "missing": self.missing, "untimed": self.untimed, "latency": list(self.latency)}


@dataclass(frozen=True)
class Change:
    """A new admission rate and why."""

    rate: int
    previous: int
    reason: str


class Admission:
    """The unknown-source admission rate, adapted to the registrar's measured health."""

    def __init__(self, *, floor: int, ceiling: int, start: int, latency_ms: float,
                 max_missing: float) -> None:
        self.floor = max(1, min(floor, ceiling))
        self.ceiling = ceiling
        self.rate = float(min(ceiling, max(self.floor, start)))
        self.latency_ms = latency_ms
        self.max_missing = max_missing
        self.reason = "start"
        self.last_cut = float(ceiling)  # the rate at which the registrar last was unwell

    def update(self, health: Health) -> Change | None:
        """One control step over ``health``; a Change when the whole-number rate moved."""
        previous = int(self.rate)
        judged = health.answered + health.missing
        p90 = health.p90_ms()
        # unanswered requests alone are no proof of overload: a registrar also ignores junk an
        # attacker sends on purpose to have the rate cut. An overloaded one queues first, so it
        # takes answers slowing down too (or none at all).
        queueing = health.answered == 0 or (p90 is not None and p90 >= self.latency_ms * QUEUEING)
        arrived = health.unknown + health.known
        if health.queue_dropped > max(MIN_SAMPLE, self.max_missing * arrived):
            self.last_cut = self.rate
            self.rate = max(float(self.floor), self.rate * CUT)
            reason = f"the guard's queue overflowed ({health.queue_dropped} packets dropped)"
        elif judged >= MIN_SAMPLE and health.missing_share() > self.max_missing and queueing:
            self.last_cut = self.rate
            self.rate = max(float(self.floor), self.rate * CUT)
            reason = f"{health.missing_share():.1%} of admitted requests unanswered"
        elif judged >= MIN_SAMPLE and p90 is not None and p90 > self.latency_ms:
            self.last_cut = self.rate
            self.rate = max(float(self.floor), self.rate * CUT)
            reason = f"answers slow: p90 {p90:g} ms > {self.latency_ms:g} ms"
        elif health.seconds > 0 and health.unknown >= BUSY * self.rate * health.seconds:
            step = self.rate if self.rate < self.last_cut * SLOW_START else self.rate * GROWTH
            self.rate = min(float(self.ceiling), self.rate + max(1.0, step))
            reason = "healthy and in demand"
        else:
            return None
        rate = int(self.rate)
        if rate == previous:
            return None
        self.reason = reason
        return Change(rate, previous, reason)

    def export(self) -> dict[str, object]:
        return {"rate": int(self.rate), "reason": self.reason}

    def restore(self, data: dict[str, object]) -> None:
        rate = data.get("rate")
        if isinstance(rate, int):
            self.rate = float(min(self.ceiling, max(self.floor, rate)))
            reason = data.get("reason")
            self.reason = reason if isinstance(reason, str) else "restored"
