"""The supervisor's admission loop: the workers' measured registrar health in, the kernel's
budget for unknown sources out.

Every ``EVERY`` seconds the supervisor sums what each guard worker published (its
``HealthMeter`` totals in the ``counters-<engine>`` snapshot) and what the kernel dropped for want
of room in the guard's queues (the guard itself can be the limit), lets the controller
(``policy.admission.Admission``) adapt the rate, and when it moved: records it in the store
(snapshot ``admission``: rate, reason, when, recent changes), emits an ``admission`` event and
has the rule keeper re-apply the ruleset at once with that budget. The budget rule is the
hashlimit of ``limits.queue_budget``; its table name carries the rate, so the kernel takes the new
rate from the replacing rule. ``floodguard apply`` renders the same budget from the store, so
an operator's apply never undoes the controller.

With ``[admission] mode = "static"`` nothing adapts: the budget is ``limits.queue_budget``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from floodguard.config import Config
from floodguard.events import EventLog
from floodguard.policy.admission import Admission, Health
from floodguard.store import Store

EVERY = 2.0  # seconds between control steps
STATE = "admission"
HISTORY = 20  # recent changes kept in the state


def _enabled(cfg: Config) -> bool:
    return cfg.admission.mode == "auto" and cfg.guard.mode != "monitor"


def effective(cfg: Config, rate: int | None) -> Config:
    """``cfg`` with the unknown-source budget at ``rate`` (None or static mode: unchanged)."""
    if rate is None or not _enabled(cfg) or rate == cfg.limits.queue_budget:
        return cfg
    limits = dataclasses.replace(cfg.limits, queue_budget=max(1, min(rate,
                                                                     cfg.limits.queue_budget)))
    return dataclasses.replace(cfg, limits=limits)


def start_rate(cfg: Config) -> int:
    return min(cfg.limits.queue_budget, max(cfg.admission.floor, cfg.admission.start))


def current(store: Store, cfg: Config) -> dict[str, Any] | None:
    """The recorded admission state (rate, reason, changed, history); None in static mode."""
    if not _enabled(cfg):
        return None
    found = store.load_snapshot(STATE)
    data = found[1] if found is not None and isinstance(found[1], dict) else {}
    rate = data.get("rate")
    if not isinstance(rate, int):
        return {"rate": start_rate(cfg), "reason": "start", "changed": None, "history": []}
    return {**data, "rate": max(1, min(rate, cfg.limits.queue_budget))}


def applied_config(store: Store, cfg: Config) -> Config:
    """What ``floodguard apply`` renders: the configured rules with the admission rate the
    controller reached (or its start rate)."""
    state = current(store, cfg)
    return effective(cfg, state["rate"] if state is not None else None)


class AdmissionKeeper:
    """Runs the controller in the supervisor; ``rate`` is the budget to enforce."""

    def __init__(self, cfg: Config, events: EventLog, store: Store) -> None:
        self.events = events
        self.store = store
        self.cfg = cfg
        self.controller = self._controller(cfg)
        state = current(store, cfg)
        if state is not None:
            self.controller.restore(state)
        self.history: list[dict[str, Any]] = list(state.get("history", [])) if state else []
        self.last = time.monotonic()
        self.seen: dict[str, dict[str, object]] = {}
        self.dropped = -1  # the guard's queues' drop counters at the last step
        self.changed = False

    @staticmethod
    def _controller(cfg: Config) -> Admission:
        a = cfg.admission
        return Admission(floor=a.floor, ceiling=cfg.limits.queue_budget, start=start_rate(cfg),
                         latency_ms=a.latency_ms, max_missing=a.max_missing)

    def reload(self, cfg: Config) -> None:
        rate = int(self.controller.rate)
        self.cfg = cfg
        self.controller = self._controller(cfg)
        self.controller.restore({"rate": rate, "reason": self.controller.reason})

    def _queue_dropped(self) -> int:
        """Packets the kernel dropped for want of room in the guard's queues, since boot."""
        from floodguard.metrics import queue_stats

        first, count = self.cfg.queue.num, self.cfg.queue.workers
        return sum(q["queue_dropped"] + q["user_dropped"] for q in queue_stats()
                   if first <= q["queue"] < first + count)

    def rate(self) -> int:
        return int(self.controller.rate)

    def check(self, now: float | None = None) -> bool:
        """One control step when due; True when the rate changed (re-apply the rules now)."""
        now = time.monotonic() if now is None else now
        if not _enabled(self.cfg) or now - self.last < EVERY:
            return False
        health = Health(seconds=now - self.last)
        self.last = now
        dropped = self._queue_dropped()
        health.queue_dropped = max(0, dropped - self.dropped) if self.dropped >= 0 else 0
        self.dropped = dropped
        for name, (_saved, data) in self.store.counter_snapshots().items():
            totals = data.get("health")
            if not isinstance(totals, dict):
                continue
            if name in self.seen:  # a worker's first totals only set where it counts from
                health.add_delta(self.seen[name], totals)
            self.seen[name] = totals
        change = self.controller.update(health)
        if change is None:
            return False
        wall = time.time()
        self.history = [*self.history, {"ts": round(wall, 1), "rate": change.rate,
                                        "previous": change.previous,
                                        "reason": change.reason}][-HISTORY:]
        self.store.save_snapshot(STATE, {"rate": change.rate, "reason": change.reason,
                                         "changed": wall, "health": health.as_dict(),
                                         "history": self.history})
        self.events.emit("admission", rate=change.rate, previous=change.previous,
                         reason=change.reason, **health.as_dict())
        return True
