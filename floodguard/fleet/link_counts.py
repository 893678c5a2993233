"""What the fleet link counts: changes pushed, received and applied by kind, malformed entries
skipped (``fleet_invalid`` events), and the apply lag of changes from other nodes."""

from __future__ import annotations

import bisect
from collections import deque
from typing import Any

from floodguard.events import EventLog
from floodguard.fleet.apply import ApplyResult

LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RECENT_LAGS = 10000
EVENT_BAD = 5  # malformed entries quoted in one fleet_invalid event


class LinkCounts:
    """The link's counters and lag histogram (shown by ``floodguard status`` and the metrics)."""

    def __init__(self, events: EventLog) -> None:
        self.events = events
        self.counts: dict[str, int] = dict.fromkeys(
            ("pushed", "received", "bans", "unbans", "known", "allowed", "allows", "disallows",
             "skipped", "monitor", "full", "errors", "invalid", "pulled"), 0)
        self.lag_counts = [0] * (len(LAG_BUCKETS) + 1)
        self.lag_sum = 0.0
        self.recent: deque[float] = deque(maxlen=RECENT_LAGS)

    def reject(self, where: str, bad: list[str]) -> None:
        """Count entries skipped as malformed and say so in one event (first few quoted)."""
        if not bad:
            return
        self.counts["invalid"] += len(bad)
        self.events.emit("fleet_invalid", where=where, count=len(bad),
                         examples=bad[:EVENT_BAD])

    def account(self, result: ApplyResult, live: bool = True) -> None:
        self.counts["bans"] += len(result.bans)
        self.counts["unbans"] += len(result.unbans)
        self.counts["known"] += result.known
        self.counts["allowed"] += len(result.allowed)
        self.counts["allows"] += len(result.allows)
        self.counts["disallows"] += len(result.disallows)
        self.counts["skipped"] += result.skipped
        self.counts["monitor"] += result.monitor
        self.counts["full"] += result.full
        self.counts["errors"] += result.errors
        for ip, network, origin in result.allowed if live else ():
            # a re-sync finds the same ones again: reported once, when they arrive
            self.events.emit("fleet_ban_allowed", ip=ip, allow=network, origin=origin)
        if result.full:
            self.events.emit("fleet_set_full", entries=result.full)

    def lags(self, lags: list[float]) -> None:
        """Apply lags (seconds from the origin's change to this node's apply)."""
        for lag in lags:
            self.lag_counts[bisect.bisect_left(LAG_BUCKETS, lag)] += 1
            self.lag_sum += lag
            self.recent.append(lag)

    def lag_summary(self) -> dict[str, Any]:
        recent = sorted(self.recent)

        def quantile(q: float) -> float | None:
            return round(recent[min(len(recent) - 1, int(q * len(recent)))], 4) \
                if recent else None

        return {"buckets": list(LAG_BUCKETS), "counts": list(self.lag_counts),
                "sum": self.lag_sum, "p50": quantile(0.5), "p99": quantile(0.99),
                "max": round(recent[-1], 4) if recent else None, "window": len(recent)}
