"""What a guard does with the policy engine's actions: bans, unbans, known-good marks,
endpoint suspensions, account protections and lockdowns go through the node's one enforcement
path (enforce.py); in monitor mode they are only counted and logged as ``would_*`` events.

Known-good marks are batched: written from the guard's tick, and only when the stored time runs
low, so a 200 OK is never held up by a set or database write.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter
from collections.abc import Callable

from floodguard.enforce import Enforcer
from floodguard.events import EventLog
from floodguard.failures import FailureLog
from floodguard.policy.actions import (
    Action,
    Ban,
    Counted,
    LiftAccount,
    LiftLockdown,
    LiftPair,
    Lockdown,
    MarkKnown,
    MarkPair,
    ProtectAccount,
    SuspendPair,
    Unban,
)
from floodguard.policy.engine import Engine
from floodguard.policy.pair_ports import PairPorts

BAN_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)
# Refresh a known-good entry in the kernel and the store only when less than this share of its
# time is left, so steady re-registrations do not cost a write each.
KNOWN_REFRESH_SHARE = 0.5


class GuardActions:
    """The engine's actions for one guard, enforced (or, in monitor mode, logged)."""

    def __init__(self, engine: Engine, enforce: Enforcer, events: EventLog, failures: FailureLog,
                 counters: Counter[str], *, monitor: bool, clock: Callable[[], float],
                 wall: Callable[[], float]) -> None:
        self.engine = engine
        self.enforce = enforce
        self.events = events
        self.failures = failures
        self.counters = counters  # the guard's verdict counters (monitor mode's would-ban:*)
        self.monitor = monitor
        self.clock = clock
        self.wall = wall
        self.ban_latency = [0] * (len(BAN_LATENCY_BUCKETS) + 1)
        self.ban_latency_sum = 0.0
        self._known_until: dict[str, float] = {}
        self._known_pending: dict[str, int] = {}
        self._pair_until: dict[tuple[str, str], float] = {}
        self._pairs_pending: dict[tuple[str, str], int] = {}
        self._pair_ports = PairPorts()
        # where the 2xx being handled goes (a lockdown's pass entry for its pair)
        self.answering: tuple[str, int] | None = None
        self.kernel_locked: dict[str, float] = {}  # source -> until of its kernel lockdown

    def apply(self, actions: tuple[Action, ...] | list[Action], t0: float) -> None:
        """Carry out ``actions``; ``t0``: when the packet that led to them reached the guard
        (ban latency)."""
        for action in actions:
            if isinstance(action, Counted):
                self.failures.record(action.ip, action.aor, self.wall())
        if self.monitor:
            self._log_only(actions)
            return
        for action in actions:
            if isinstance(action, Ban):
                self._ban(action, t0)
            elif isinstance(action, Unban):
                self._unban(action)
            elif isinstance(action, MarkKnown):
                self._mark_known(action)
            elif isinstance(action, MarkPair):
                self._mark_pair(action)
            elif isinstance(action, SuspendPair):
                self.enforce.suspend_pair(action.ip, action.aor, action.seconds,
                                          reason=action.reason, failures=action.failures,
                                          level=action.level)
            elif isinstance(action, LiftPair):
                self.enforce.lift_pair(action.ip, action.aor, reason=action.reason)
            elif isinstance(action, ProtectAccount):
                self.enforce.protect_account(action.aor, action.seconds, sources=action.sources,
                                             level=action.level)
            elif isinstance(action, LiftAccount):
                self.enforce.end_protection(action.aor, reason=action.reason)
            elif isinstance(action, Lockdown):
                self._lockdown(action)
            elif isinstance(action, LiftLockdown):
                self.kernel_locked.pop(action.ip, None)
                self.enforce.end_lockdown(action.ip, reason=action.reason)

    def _log_only(self, actions: tuple[Action, ...] | list[Action]) -> None:
        """Monitor mode: say what enforcement would have done, change nothing."""
        for action in actions:
            if isinstance(action, Ban):
                self.counters["would-ban:" + action.kind] += 1
                self.events.emit(
                    "would_suspend" if action.kind == "suspend" else "would_ban", ip=action.ip,
                    aor=action.aor, reason=action.reason, kind=action.kind,
                    failures=action.failures, seconds=action.seconds)
            elif isinstance(action, Unban):
                self.events.emit("would_unban", ip=action.ip, reason=action.reason)
            elif isinstance(action, SuspendPair):
                self.counters["would-ban:pair"] += 1
                self.events.emit("would_suspend", ip=action.ip, aor=action.aor, scope="aor",
                                 reason=action.reason, kind="suspend",
                                 failures=action.failures, level=action.level,
                                 seconds=action.seconds)
            elif isinstance(action, LiftPair):
                self.events.emit("would_suspend_end", ip=action.ip, aor=action.aor,
                                 scope="aor", reason=action.reason)
            elif isinstance(action, ProtectAccount):
                self.counters["would-ban:account"] += 1
                self.events.emit("would_protect", aor=action.aor, sources=action.sources,
                                 level=action.level, seconds=action.seconds)
            elif isinstance(action, LiftAccount):
                self.events.emit("would_protect_end", aor=action.aor, reason=action.reason)
            elif isinstance(action, Lockdown):
                self.counters["would-ban:lockdown"] += 1
                self.events.emit("would_lockdown", ip=action.ip, failures=action.failures,
                                 level=action.level, seconds=action.seconds)
            elif isinstance(action, LiftLockdown):
                self.events.emit("would_lockdown_end", ip=action.ip, reason=action.reason)

    def _ban(self, ban: Ban, t0: float) -> None:
        self.enforce.ban(ban.ip, ban.seconds, kind=ban.kind, reason=ban.reason, aor=ban.aor,
                         failures=ban.failures)
        # from the deciding packet's arrival in the guard to the ban being in force
        latency = time.perf_counter() - t0
        self.ban_latency_sum += latency
        self.ban_latency[bisect.bisect_left(BAN_LATENCY_BUCKETS, latency)] += 1

    def _unban(self, unban: Unban) -> None:
        # lifted by this node's own allow list: other nodes of a fleet keep their ban
        self.enforce.unban(unban.ip, reason=unban.reason,
                           journal=unban.reason != "allow-listed")

    def _mark_known(self, mark: MarkKnown) -> None:
        now = self.clock()
        until = self._known_until.get(mark.ip)
        if until is not None and until - now > mark.seconds * KNOWN_REFRESH_SHARE:
            return
        if len(self._known_until) > 200_000:
            self._known_until.clear()
        self._known_until[mark.ip] = now + mark.seconds
        # written from tick(): a 200 OK is never held up by a set or database write
        self._known_pending[mark.ip] = max(1, math.ceil(mark.seconds))

    def _lockdown(self, action: Lockdown) -> None:
        """In the kernel too when every live known-good pair of the source has a UDP port
        here: the kernel then drops everything else from the address."""
        now = self.clock()
        live = [aor for src, aor, _ in self.engine.pairs.known_pairs(now) if src == action.ip]
        passes = self._pair_ports.passes(now, action.ip, live)
        self.enforce.lockdown(action.ip, action.seconds, failures=action.failures,
                              level=action.level, passes=passes)
        if passes is not None:
            if len(self.kernel_locked) > 100_000:
                self.kernel_locked.clear()
            self.kernel_locked[action.ip] = now + action.seconds

    def _mark_pair(self, mark: MarkPair) -> None:
        """A known-good pair, written from tick() and only when its stored time runs low."""
        now = self.clock()
        key = (mark.ip, mark.aor)
        answering = self.answering
        if answering is None:
            self._pair_ports.forget(mark.ip, mark.aor)
        else:
            self._pair_ports.note(mark.ip, mark.aor, answering[0], answering[1],
                                  now + mark.seconds)
            locked = self.kernel_locked.get(mark.ip)
            if locked is not None and locked > now:
                self.enforce.pass_pair(answering[0], answering[1], locked - now)
        until = self._pair_until.get(key)
        if until is not None and until - now > mark.seconds * KNOWN_REFRESH_SHARE:
            return
        if len(self._pair_until) > 200_000:
            self._pair_until.clear()
        self._pair_until[key] = now + mark.seconds
        self._pairs_pending[key] = max(1, math.ceil(mark.seconds))

    @property
    def pending(self) -> bool:
        """Known-good marks waiting for flush_known()."""
        return bool(self._known_pending or self._pairs_pending)

    def flush_known(self) -> None:
        """Write the known-good sources and pairs marked since the last call."""
        pending, self._known_pending = self._known_pending, {}
        wall = self.wall()
        for ip, seconds in pending.items():
            self.enforce.known(ip, seconds, now=wall)
        if self._pairs_pending:
            pairs, self._pairs_pending = self._pairs_pending, {}
            self.enforce.known_pairs([(ip, aor, seconds) for (ip, aor), seconds in pairs.items()],
                                     now=wall)

    # ------------------------------------------------------------------ lifecycle
