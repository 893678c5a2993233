"""Registration baselines and anomalies: "500 usually, 5,000 now".

Pure, wall time passed in. ``Baseline`` learns, per hour of the week, the usual number of
current registrations and the usual REGISTER rate as exponentially weighted moving averages,
and reports an anomaly when a sample is far above or below what is usual for that hour (after
enough samples to know). ``SubnetShare`` reports when one /24 (IPv6: /48) sends most of the
REGISTERs or receives most of the 401s in a window.
"""

from __future__ import annotations

import functools
import ipaddress
import time
from dataclasses import dataclass
from typing import Any

HOURS_PER_WEEK = 168


@dataclass(frozen=True)
class Anomaly:
    """Something far from the usual; ``kind`` is spike, drop or subnet."""

    metric: str
    kind: str
    value: float
    usual: float
    detail: str = ""


def hour_of_week(wall: float) -> int:
    t = time.gmtime(wall)
    return t.tm_wday * 24 + t.tm_hour


class Baseline:
    """EWMA per hour-of-week slot for each metric."""

    def __init__(self, *, alpha: float = 0.05, factor: float = 3.0, min_samples: int = 30,
                 floor: float = 20.0) -> None:
        self.alpha = alpha
        self.factor = factor
        self.min_samples = min_samples
        self.floor = floor  # below this on both sides, a change is not worth an alarm
        self.slots: dict[str, list[list[float]]] = {}  # metric -> [mean, samples] per slot

    def observe(self, wall: float, **values: float) -> list[Anomaly]:
        """Learn one sample of each metric; return anomalies against the learned usual."""
        slot = hour_of_week(wall)
        out = []
        for metric, value in values.items():
            table = self.slots.setdefault(metric, [[0.0, 0] for _ in range(HOURS_PER_WEEK)])
            mean, samples = table[slot]
            if samples >= self.min_samples and max(value, mean) >= self.floor:
                if value > mean * self.factor:
                    out.append(Anomaly(metric, "spike", value, round(mean, 1)))
                elif value < mean / self.factor:
                    out.append(Anomaly(metric, "drop", value, round(mean, 1)))
            if out and out[-1].metric == metric:
                continue  # an anomaly is not learned as the new usual
            table[slot] = [value if samples == 0 else mean + self.alpha * (value - mean),
                           samples + 1]
        return out

    def usual(self, wall: float, metric: str) -> float | None:
        table = self.slots.get(metric)
        if table is None:
            return None
        mean, samples = table[hour_of_week(wall)]
        return mean if samples else None

    def export(self) -> dict[str, Any]:
        return {"slots": self.slots}

    def restore(self, data: dict[str, Any]) -> None:
        slots = data.get("slots", {})
        if isinstance(slots, dict):
            self.slots = {m: [[float(a), int(b)] for a, b in t] for m, t in slots.items()
                          if isinstance(t, list) and len(t) == HOURS_PER_WEEK}


@functools.lru_cache(maxsize=8192)
def subnet_of(ip: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) an address belongs to, as text."""
    if ":" not in ip:
        return ip.rpartition(".")[0] + ".0/24"
    try:
        net = ipaddress.IPv6Network(f"{ip}/48", strict=False)
    except ValueError:
        return ip
    return str(net)


class SubnetShare:
    """Counts per subnet over a window; reports subnets holding most of the total."""

    def __init__(self, *, window: float = 60.0, share: float = 0.5, min_total: int = 100,
                 max_subnets: int = 65536) -> None:
        self.window = window
        self.share = share
        self.min_total = min_total
        self.max_subnets = max_subnets
        self.counts: dict[str, dict[str, int]] = {}
        self.started = 0.0

    def add(self, metric: str, ip: str) -> None:
        table = self.counts.get(metric)
        if table is None:
            table = self.counts[metric] = {}
        key = subnet_of(ip)
        count = table.get(key)
        if count is not None:
            table[key] = count + 1
        elif len(table) < self.max_subnets:
            table[key] = 1

    def check(self, now: float) -> list[Anomaly]:
        """At the end of a window: subnets over their share; then start a new window."""
        if now - self.started < self.window:
            return []
        out = []
        for metric, table in self.counts.items():
            total = sum(table.values())
            if total < self.min_total:
                continue
            subnet, top = max(table.items(), key=lambda kv: kv[1])
            if top >= self.share * total:
                out.append(Anomaly(metric, "subnet", float(top), float(total),
                                   f"{subnet} has {top} of {total} in {self.window:g} s"))
        self.counts = {}
        self.started = now
        return out
