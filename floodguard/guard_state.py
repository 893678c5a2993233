"""What a guard holds and its periodic work: restoring the persisted state at start, operator
commands, registrar reports, the run-time allow list, counters, snapshots and the baseline.

``GuardState`` is the base of ``Guard`` (guard.py), which adds the per-packet path; the
engine's actions are carried out by ``GuardActions`` (guard_actions.py).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable

from floodguard.addr import source_key
from floodguard.allow_list import static_networks, with_runtime
from floodguard.config import Config
from floodguard.enforce import Enforcer, Forget, SetWriter
from floodguard.events import EventLog
from floodguard.failures import FailureLog, log_path
from floodguard.guard_actions import BAN_LATENCY_BUCKETS, GuardActions
from floodguard.guard_commands import run_command
from floodguard.kernel.rules import queue_for
from floodguard.policy.actions import Action
from floodguard.policy.admission import HealthMeter
from floodguard.policy.baseline import Baseline, SubnetShare
from floodguard.policy.buckets import TokenBucket
from floodguard.policy.engine import Engine
from floodguard.sip.proof import ProofKey
from floodguard.store import HOLD_ACCOUNT, HOLD_LOCKDOWN, Store
from floodguard.tcpflow import FlowTable

SNAPSHOT_EVERY = 5.0
COUNTERS_EVERY = 1.0
BASELINE_EVERY = 60.0
TOP_OFFENDERS = 20
# Unproven credentials taken out of REGISTERs per second (each is a packet rewrite in Python);
# beyond this budget they are dropped: a flood of bogus credentials costs a cheap test each.
STRIP_RATE = 200.0
# IPv6 address -> its prefix key; emptied when full (a flood of addresses only costs the lookup)
V6_KEY_CACHE = 65536
COMMANDS_PER_TICK = 2000
# A registrar that hands one nonce to several clients is reported at most this often.
SHARED_NONCE_REPORT_EVERY = 3600.0


class GuardState:
    """One queue's guard: its engine, tables, counters and housekeeping (``tick``)."""

    def __init__(
        self,
        cfg: Config,
        *,
        sets: SetWriter,
        store: Store,
        events: EventLog,
        name: str = "engine",
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        meter_clock: Callable[[], float] | None = None,
        flush_conntrack: Forget | None = None,
        engine: Engine | None = None,
        prove_by_nonce: bool = False,
        queue: int | None = None,
    ) -> None:
        """``prove_by_nonce``: take "the registrar's nonce was first issued to this address" as
        proof of address instead of the guard's token, and alter no packet; only for offline
        replay of captures, where no token was ever handed out. ``meter_clock`` times the
        registrar's answers for admission (default ``clock``): the daemon's ``clock`` goes
        back to each packet's arrival, while the registrar's answer time is measured from
        when the request left the guard, as before."""
        self.cfg = cfg
        self.sets = sets
        self.store = store
        self.events = events
        self.name = name
        self.clock = clock
        self.wall = wall
        self.meter_clock = meter_clock or clock
        # every ban, unban and known-good mark goes through the node's one enforcement path
        self.enforce = Enforcer(store, sets, events, by="guard", forget=flush_conntrack,
                                wall=wall)
        self.engine = engine or Engine(cfg)
        self.monitor = cfg.guard.mode == "monitor"
        self.counters: Counter[str] = Counter()
        self.offenders: dict[str, int] = {}
        self.last_drop: dict[str, str] = {}  # offender -> the reason of its last drop
        self.baseline = Baseline()
        self.share = SubnetShare()
        self.registers = 0
        self._last_baseline = clock()
        self._t0 = 0.0  # when the packet being handled reached the guard
        self._last_snapshot = 0.0
        self._last_counters = 0.0
        self._command_id = store.last_command_id()
        # the run-time allow list (floodguard allow) in force, and when its next entry ends
        self._runtime_allow: tuple[str, ...] = ()
        self._allow_expiry = math.inf
        self.proof = ProofKey(store.secret("proof"))
        self.prove_by_nonce = prove_by_nonce
        # which worker this is (None: the only one): registrar reports are taken by the worker
        # the rules send that source to
        self.queue = queue
        self._report_id = store.last_report_id()
        self.v6_prefix = cfg.limits.ipv6_prefix
        # an inbound UDP packet this large is dropped unread (limits.udp_oversize)
        self.udp_oversize = cfg.limits.udp_oversize
        self._v6_keys: dict[str, str] = {}
        self.flows = FlowTable()
        self.health = HealthMeter()
        self.failures = FailureLog(log_path(store.path, name))
        self.actions = GuardActions(self.engine, self.enforce, events, self.failures,
                                    self.counters, monitor=self.monitor, clock=clock, wall=wall)
        self._strips = TokenBucket(STRIP_RATE, STRIP_RATE)
        # the proof key is made at the guard's first start and kept: its age is the deployment's
        key = store.load_snapshot("secret-proof")
        self._first_period_ends = (key[0] if key is not None else wall()) + cfg.registrar.expire
        self._shared_reported = -SHARED_NONCE_REPORT_EVERY

    def _key(self, ip: str) -> str:
        """The engine's key for a client address: IPv4 as it is, IPv6 as the network address
        of its limits.ipv6_prefix (a host owns its /64 and rotates through it at will)."""
        if ":" not in ip:
            return ip
        keys = self._v6_keys
        key = keys.get(ip)
        if key is None:
            if len(keys) >= V6_KEY_CACHE:
                keys.clear()
            key = keys[ip] = source_key(ip, self.v6_prefix)
        return key
    # ------------------------------------------------------------------ lifecycle

    def apply(self, actions: tuple[Action, ...] | list[Action]) -> None:
        """Carry out the engine's actions (or log them, in monitor mode)."""
        self.actions.apply(actions, self._t0)

    @property
    def set_errors(self) -> int:
        return self.enforce.set_errors

    def flush_known(self) -> None:
        self.actions.flush_known()

    def restore(self) -> int:
        """Load persisted state into the engine and the kernel sets; returns bans restored."""
        wall = self.wall()
        now = self.clock()
        snap = self.store.load_snapshot(self.name)
        if snap is not None:
            saved, data = snap
            try:
                self.engine.restore_state(now - (wall - saved), data)
            except (KeyError, TypeError, ValueError) as exc:
                self.events.emit("restore_error", what="engine snapshot", error=str(exc))
        base = self.store.load_snapshot(f"baseline-{self.name}")
        if base is not None and isinstance(base[1], dict):
            self.baseline.restore(base[1])
        self.refresh_allows()  # before the bans: an allowed source's ban is not restored
        bans = self.store.active_bans(now=wall)
        for row in bans:
            remaining = row.remaining(wall)
            if not self.engine.is_banned(now, row.ip):
                try:
                    self.engine.restore_ban(now, row.ip, remaining, row.reason, row.kind,
                                            row.aor, row.failures)
                except ValueError:
                    continue  # now allow-listed: the allow list wins
            self.enforce.load("ban", row.ip, remaining)
        for ip, remaining in self.store.active_known(now=wall):
            self.enforce.load("known", ip, remaining)
        for ip, aor, remaining in self.store.active_known_pairs(now=wall):
            self.engine.restore_pair(now, ip, aor, remaining)
        for pair in self.store.active_pair_bans(now=wall):
            self.engine.restore_pair(now, pair.ip, pair.aor, pair.remaining(wall),
                                     (pair.failures, pair.level))
        for hold in self.store.active_holds(HOLD_ACCOUNT, now=wall):
            self.engine.restore_account(now, hold.key, hold.remaining(wall), hold.level)
        for hold in self.store.active_holds(HOLD_LOCKDOWN, now=wall):
            self.engine.restore_lockdown(now, hold.key, hold.remaining(wall), hold.level)
        # failures counted after the snapshot (a crash came before the next one): count them
        # again, so a guesser gets no fresh six after a restart
        since = snap[0] if snap is not None else 0.0
        for ip, aor, when in self.failures.since(since):
            if wall - when < self.engine.counter_ttl:
                self.apply(self.engine.count_failure(now - (wall - when), ip, aor))
        return len(bans)

    def tick(self) -> None:
        """Periodic work between packets: known-good marks, operator commands, registrar
        reports, snapshots."""
        if self.actions.pending:
            self.actions.flush_known()
        ended = self.engine.ended_pairs(self.clock())
        if ended:
            self.apply(ended)
        self.take_reports()
        # a feed or fleet batch of thousands is taken over several ticks, never all at once
        allows_changed = False
        for cmd in self.store.take_commands(self._command_id, COMMANDS_PER_TICK):
            self._command_id = cmd.id
            now = self.clock()
            try:
                if run_command(self.engine, cmd, now):
                    allows_changed = True
            except ValueError:
                pass
            if cmd.op == "unlock":
                self.actions.kernel_locked.pop(cmd.ip, None)
        if allows_changed or self.wall() >= self._allow_expiry:
            self.refresh_allows()
        now = self.clock()
        if now - self._last_counters >= COUNTERS_EVERY:
            self.publish_counters()
        if now - self._last_snapshot >= SNAPSHOT_EVERY:
            self.snapshot()
        if now - self._last_baseline >= BASELINE_EVERY:
            self.learn_baseline()

    def refresh_allows(self) -> None:
        """Re-read the run-time allow list (``floodguard allow``, the fleet): a change reloads
        the engine's allow list, which lifts the bans, suspensions and lockdowns it now covers;
        an entry that expired leaves the kernel allow set (unless the config lists it too)."""
        wall = self.wall()
        rows = self.store.active_allows(wall)
        nets = tuple(row.net for row in rows)
        ends = [row.until for row in rows if row.until is not None]
        self._allow_expiry = min(ends) if ends else math.inf
        if nets == self._runtime_allow:
            return
        gone = set(self._runtime_allow) - set(nets)
        self._runtime_allow = nets
        actions = self.engine.reload(with_runtime(self.cfg, nets))
        if actions:
            self.apply(actions)
        if gone:
            static = static_networks(self.cfg)
            expired = self.store.allow_spans(sorted(gone))  # rows still there: ended by time
            for net in sorted(gone):
                self.enforce.expire_allow(net, static=net in static, expired=net in expired)

    def take_reports(self) -> None:
        """Outcomes floodguard's registrar told about TLS registrations (which the guard cannot
        read): counted like the answers it sees on UDP and TCP."""
        cfg = self.cfg.queue
        for report in self.store.reports_after(self._report_id):
            self._report_id = report.id
            if self.queue is not None and cfg.workers > 1 and queue_for(
                    report.ip, cfg.num, cfg.workers, self.v6_prefix) != self.queue:
                continue
            try:
                key = self._key(report.ip)
            except ValueError:
                continue
            self._t0 = time.perf_counter()
            self.apply(self.engine.report(self.clock(), key, report.aor, report.ok,
                                          report.expires))

    def learn_baseline(self) -> None:
        """Once a minute: registrations and REGISTER rate against the usual, /24 shares."""
        now = self.clock()
        span = max(1.0, now - self._last_baseline)
        self._last_baseline = now
        registered = self.engine.stats().get("table:known", 0)
        rate = self.registers / span
        self.registers = 0
        anomalies = self.baseline.observe(self.wall(), registrations=registered,
                                          register_rate=rate)
        anomalies += self.share.check(now)
        for anomaly in anomalies:
            self.counters[f"anomaly:{anomaly.metric}:{anomaly.kind}"] += 1
            self.events.emit("anomaly", metric=anomaly.metric, kind=anomaly.kind,
                             value=round(anomaly.value, 1), usual=anomaly.usual,
                             detail=anomaly.detail or None)

    def publish_counters(self) -> None:
        """Verdict counters and table sizes, for `floodguard status`, metrics and the lab."""
        self._last_counters = self.clock()
        top = sorted(self.offenders.items(), key=lambda kv: -kv[1])[:TOP_OFFENDERS]
        self.store.save_snapshot(f"counters-{self.name}", {
            "verdicts": dict(self.counters), "set_errors": self.set_errors,
            "engine": {**self.engine.stats(), "table:tcp_flows": len(self.flows),
                       "evicted:tcp_flows": self.flows.evicted},
            "ban_latency": {"buckets": list(BAN_LATENCY_BUCKETS),
                            "counts": self.actions.ban_latency,
                            "sum": self.actions.ban_latency_sum},
            "offenders": top,
            "offender_reasons": {ip: self.last_drop.get(ip, "") for ip, _ in top},
            "health": self.health.totals(self.meter_clock()),
        }, now=self.wall())

    def snapshot(self) -> None:
        self.actions.flush_known()
        self.publish_counters()
        now = self.clock()
        self._last_snapshot = now
        wall = self.wall()
        self.store.save_snapshot(self.name, self.engine.export_state(now), now=wall)
        self.failures.clear()
        self.store.save_snapshot(f"baseline-{self.name}", self.baseline.export(),
                                 now=self.wall())
        self.store.prune(now=self.wall())
        self.store.checkpoint()

    def reload(self, cfg: Config) -> None:
        self.cfg = cfg
        self.monitor = self.actions.monitor = cfg.guard.mode == "monitor"
        self.udp_oversize = cfg.limits.udp_oversize
        if cfg.limits.ipv6_prefix != self.v6_prefix:
            self.v6_prefix = cfg.limits.ipv6_prefix
            self._v6_keys = {}
        actions = self.engine.reload(with_runtime(cfg, self._runtime_allow))
        if actions:
            self.apply(actions)
        self.events.emit("reload", source=cfg.source)
