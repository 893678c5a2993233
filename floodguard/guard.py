"""The guard: NFQUEUE packets -> fast parse -> policy engine -> verdict, kernel sets, state store.

One ``Guard`` runs per queue (worker process). It sees clients' requests coming in and the
registrar's responses going out, so it learns proven failures from any registrar. Every ban is
written to the kernel ban set with its timeout at once, so the next packet from that source is
dropped in raw PREROUTING and never reaches userspace.
"""

from __future__ import annotations

import bisect
import math
import socket
import time
from collections import Counter
from collections.abc import Callable

from floodguard.addr import source_key
from floodguard.allow_list import static_networks, with_runtime
from floodguard.config import Config
from floodguard.enforce import Enforcer, Forget, SetWriter
from floodguard.events import EventLog
from floodguard.failures import FailureLog, log_path
from floodguard.guard_commands import run_command
from floodguard.kernel.nfqueue import COPY_RANGE
from floodguard.kernel.rules import queue_for
from floodguard.packet import Packet, parse_packet, replace_udp_payload
from floodguard.policy.actions import (
    LiftAccount,
    LiftLockdown,
    LiftPair,
    Lockdown,
    MarkPair,
    ProtectAccount,
    SuspendPair,
)
from floodguard.policy.admission import HealthMeter
from floodguard.policy.baseline import Baseline, SubnetShare
from floodguard.policy.buckets import TokenBucket
from floodguard.policy.engine import (
    Action,
    Ban,
    Counted,
    Engine,
    MarkKnown,
    SipView,
    Unban,
    Verdict,
)
from floodguard.policy.pair_ports import PairPorts
from floodguard.sip._scan import scan_packet
from floodguard.sip.message import SipParseError, parse_message
from floodguard.sip.proof import (
    CHECK,
    NO_PROOF,
    PROVEN,
    ProofKey,
    check_credentials,
    may_prove,
    tokenise,
)
from floodguard.sip.proof import PREFIX as PROOF_PREFIX
from floodguard.store import HOLD_ACCOUNT, HOLD_LOCKDOWN, Store
from floodguard.tcpflow import FlowTable

HOOK_LOCAL_IN = 1
HOOK_FORWARD = 2
HOOK_LOCAL_OUT = 3

SNAPSHOT_EVERY = 5.0
COUNTERS_EVERY = 1.0
BASELINE_EVERY = 60.0
BAN_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)
MAX_OFFENDERS = 4096
TOP_OFFENDERS = 20
# Refresh a known-good entry in the kernel and the store only when less than this share of its
# time is left, so steady re-registrations do not cost a write each.
KNOWN_REFRESH_SHARE = 0.5
# Unproven credentials taken out of REGISTERs per second (each is a packet rewrite in Python);
# beyond this budget they are dropped: a flood of bogus credentials costs a cheap test each.
STRIP_RATE = 200.0
TOKEN_MARK = PROOF_PREFIX
# IPv6 address -> its prefix key; emptied when full (a flood of addresses only costs the lookup)
V6_KEY_CACHE = 65536
COMMANDS_PER_TICK = 2000
# A registrar that hands one nonce to several clients is reported at most this often.
SHARED_NONCE_REPORT_EVERY = 3600.0
SHARED_NONCE_HINT = (
    "the registrar gives several clients the same nonce; floodguard does not rely on nonces "
    "(its own token in the digest opaque proves receipt), but replay protection does: "
    "Kamailio: modparam(\"auth\", \"auth_checks_register\", 11) with a secret; Asterisk: "
    "nonce_lifetime cannot fix it, put floodguard's registrar or Kamailio in front")


class Guard:
    """Policy for one queue: ``handle(payload, hook) -> accept?`` plus periodic housekeeping."""

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
        flush_conntrack: Forget | None = None,
        engine: Engine | None = None,
        prove_by_nonce: bool = False,
        queue: int | None = None,
    ) -> None:
        """``prove_by_nonce``: take "the registrar's nonce was first issued to this address" as
        proof of address instead of the guard's token, and alter no packet; only for offline
        replay of captures, where no token was ever handed out."""
        self.cfg = cfg
        self.sets = sets
        self.store = store
        self.events = events
        self.name = name
        self.clock = clock
        self.wall = wall
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
        self._t0 = 0.0
        self.ban_latency = [0] * (len(BAN_LATENCY_BUCKETS) + 1)
        self.ban_latency_sum = 0.0
        self._known_until: dict[str, float] = {}
        self._known_pending: dict[str, int] = {}
        self._pair_until: dict[tuple[str, str], float] = {}
        self._pairs_pending: dict[tuple[str, str], int] = {}
        self._pair_ports = PairPorts()
        self._answering: tuple[str, int] | None = None
        self._kernel_locked: dict[str, float] = {}  # source -> until of its kernel lockdown
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
        self._strips = TokenBucket(STRIP_RATE, STRIP_RATE)
        # the proof key is made at the guard's first start and kept: its age is the deployment's
        key = store.load_snapshot("secret-proof")
        self._first_period_ends = (key[0] if key is not None else wall()) + cfg.registrar.expire
        self._shared_reported = -SHARED_NONCE_REPORT_EVERY

    # ------------------------------------------------------------------ per packet

    def handle(self, payload: bytes, hook: int) -> bool | bytes:
        """Verdict for one packet: accept, drop, or accept with these bytes instead (a challenge
        with the guard's proof token, a REGISTER with the registrar's opaque put back or with
        unproven credentials taken out)."""
        self._t0 = time.perf_counter()
        size = len(payload)
        if size > 40 and size < COPY_RANGE:
            version = payload[0] >> 4
            if (payload[9] if version == 4 else payload[6] if version == 6 else 0) == 6:
                return self._tcp(payload, hook)
        if size >= self.udp_oversize:
            return self._large(payload, hook)
        fast = scan_packet(payload)
        if fast is None:
            return self._handle_general(payload, hook)
        src, dst, proto, sport, dport, msg = fast
        inbound = hook != HOOK_LOCAL_OUT
        return self._judge(self.clock(), src, dst, inbound, msg, payload, proto == "tcp",
                           sport if inbound else dport)

    def _handle_general(self, payload: bytes, hook: int) -> bool | bytes:
        """Every packet the C scan leaves to the Python parsers (same results, more cases)."""
        pkt = parse_packet(payload)
        if pkt is None:
            return self._unreadable(payload)
        if pkt.proto == "tcp":
            return self._tcp_segment(pkt, hook)
        now = self.clock()
        body = pkt.payload
        inbound = self._inbound(pkt.sport, pkt.dport, body, hook)
        if not body:
            return True  # TCP handshakes and ACKs: the kernel's SYN and connection limits apply
        try:
            msg = parse_message(body)
        except SipParseError as exc:
            if pkt.proto == "tcp" or not inbound:
                # a TCP segment that does not start a whole message (or our own output) is never
                # judged on its own: it cannot be mis-read as a failure
                self.counters[f"pass:partial:{exc.reason}"] += 1
                return True
            key = self._key(pkt.src)
            self.health.arrival(not self.engine.is_known(now, key))
            return self._finish(self.engine.on_unparseable(now, key, exc.reason), key)
        return self._judge(now, pkt.src, pkt.dst, inbound, msg, payload, pkt.proto == "tcp",
                           pkt.sport if inbound else pkt.dport)

    def _tcp(self, payload: bytes, hook: int) -> bool | bytes:
        pkt = parse_packet(payload)
        if pkt is None:
            return self._unreadable(payload)
        return self._tcp_segment(pkt, hook)

    def _tcp_segment(self, pkt: Packet, hook: int) -> bool:
        """A TCP segment: reassembled with the rest of its flow, every complete message in it
        judged once. A drop of any of them (or a gap, a desynchronising retransmission,
        malformed data) cuts the flow: its later segments are dropped too."""
        now = self.clock()
        body = pkt.payload
        if self._inbound(pkt.sport, pkt.dport, body, hook):
            key = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
            status, messages = self.flows.inbound(now, key, pkt.seq, pkt.tcp_flags, body)
            accept = True
            for msg in messages:
                if self._judge(now, pkt.src, pkt.dst, True, msg, b"", True, 0) is False:
                    accept = False
            if status.startswith("drop:"):
                self.counters[("would-drop:" if self.monitor else "drop:") + status[5:]] += 1
                return self.monitor
            if not accept:
                self.flows.kill(key)
                self.counters["tcp:cut"] += 1
            return accept
        key = (pkt.dst, pkt.dport, pkt.src, pkt.sport)
        for msg in self.flows.outbound(now, key, pkt.seq, pkt.ack, pkt.tcp_flags, body):
            self._judge(now, pkt.src, pkt.dst, False, msg, b"", True, 0)
        return True

    @staticmethod
    def _inbound(sport: int, dport: int, body: bytes, hook: int) -> bool:
        """A client's packet, else the registrar's output: by the hook, never by ports (anyone
        can send from port 5060). In forward mode the queue binding reports what the rules
        marked as arriving from the registrar's side with the LOCAL_OUT hook."""
        return hook != HOOK_LOCAL_OUT

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

    def _judge(self, now: float, src: str, dst: str, inbound: bool, msg: SipView,
               payload: bytes, tcp: bool, port: int) -> bool | bytes:
        """One SIP message; ``port`` is the client's (0 over TCP)."""
        peer = dst
        if inbound:
            src = self._key(src)
        else:
            dst = self._key(dst)
        if inbound:
            if msg.is_request:
                self.health.arrival(not self.engine.is_known(now, src))
                proven = tcp  # a TCP source completed a handshake: its address is real
                rewritten: bytes | None = None
                unproven = False  # UDP credentials without the guard's token for src
                if msg.method == "REGISTER":
                    self.registers += 1
                    self.share.add("register", src)
                    auth = msg.authorization
                    if tcp or auth is None:
                        pass
                    elif self.prove_by_nonce:
                        proven = bool(auth.nonce) and self.engine.nonce_holder(
                            now, auth.nonce or "") == src
                    else:
                        # cheap looks first: a flood carries no token, or not a valid one
                        look = may_prove(payload, src, auth.nonce, self.proof) \
                            if TOKEN_MARK in payload else NO_PROOF
                        if look == PROVEN:
                            proven = True
                        elif look == CHECK:
                            proven, rewritten = self._prove(payload, src)
                        unproven = not proven
                verdict = self.engine.on_request(now, src, msg, proven)
                accept = self._finish(verdict, src)
                if not verdict.accept:
                    return accept
                if proven:
                    result: bool | bytes = rewritten if rewritten is not None else accept
                elif not unproven or self.monitor or verdict.reason == "allow":
                    result = accept  # monitor mode and trusted sources: never altered
                else:
                    result = self._unproven(now, payload, src, rewritten)
                if result is not False:
                    self._admitted(now, src, msg)
                return result
            if self.engine.is_banned(now, src):
                self.counters["drop:banned"] += 1
                return False
            self.counters["pass:response-in"] += 1
            return True
        if not msg.is_request:
            status = msg.status
            if status == 401:
                self.share.add("401", dst)
            if status is not None and status >= 200:
                call_id, cseq = msg.call_id, msg.cseq_num
                if call_id is not None and cseq is not None:
                    self.health.response(now, dst, call_id, cseq)
            verdict = self.engine.on_response(now, dst, msg)
            self.counters["pass:response-out"] += 1
            if verdict.actions:
                # where a 2xx went is where its pair registers from (a lockdown's pass entry)
                self._answering = (peer, port) if not tcp and port else None
                self.apply(verdict.actions)
                self._answering = None
            if (msg.status == 401 or msg.status == 407) and not tcp and not self.prove_by_nonce:
                return self._tokenise(payload, dst)
            return True
        self.counters["pass:request-out"] += 1
        return True

    def _admitted(self, now: float, src: str, msg: SipView) -> None:
        """A REGISTER or OPTIONS on its way to the registrar: timed until its final answer (the
        registrar's measured health drives the admission rate)."""
        method = msg.method
        if method != "REGISTER" and method != "OPTIONS":
            return
        call_id, cseq = msg.call_id, msg.cseq_num
        if call_id is not None and cseq is not None:
            self.health.request(now, src, call_id, cseq)

    def _unproven(self, now: float, payload: bytes, src: str,
                  stripped: bytes | None) -> bool | bytes:
        """Credentials without proof never reach the registrar. They answer no challenge this
        source received: a spoofed packet or a replay, dropped. Two exceptions, within a budget
        of such rewrites per second, get their credentials taken out instead (the registrar
        challenges afresh): a known-good source, and any source during the first
        registration period after the guard's first start (``registrar.expire``: a phone
        still holding a nonce from before floodguard needs it once)."""
        if (self.wall() < self._first_period_ends or self.engine.is_known(now, src)) \
                and self._strips.take(now):
            if stripped is None:
                stripped = self._prove(payload, src)[1]
            if stripped is not None:
                self.counters["proof:stripped"] += 1
                return stripped
        self.counters["drop:unproven"] += 1
        return False

    def _prove(self, payload: bytes, src: str) -> tuple[bool, bytes | None]:
        """(proven, rewritten packet) for a UDP REGISTER with credentials: proven when they
        carry the guard's token for src (the registrar's opaque then goes back in); otherwise
        the packet without its credentials, so the guess never reaches the registrar."""
        pkt = parse_packet(payload)
        if pkt is None:
            return False, None
        proven, sip = check_credentials(pkt.payload, src, self.proof)
        if sip is None:
            return proven, None
        return proven, replace_udp_payload(payload, sip)

    def _tokenise(self, payload: bytes, client: str) -> bool | bytes:
        """A 401/407 going out over UDP, with the guard's proof token in each challenge."""
        if self.engine.stats_value("shared_nonces") and (
                self.clock() - self._shared_reported >= SHARED_NONCE_REPORT_EVERY):
            self._shared_reported = self.clock()
            self.events.emit("registrar_shared_nonces",
                             count=self.engine.stats_value("shared_nonces"),
                             hint=SHARED_NONCE_HINT)
        pkt = parse_packet(payload)
        if pkt is None:
            return True
        sip = tokenise(pkt.payload, client, self.proof)
        out = None if sip is None else replace_udp_payload(payload, sip)
        if out is None:
            self.counters["proof:untokenised"] += 1
            return True
        self.counters["proof:tokenised"] += 1
        return out

    def _large(self, payload: bytes, hook: int) -> bool | bytes:
        """A packet of ``limits.udp_oversize`` bytes or more: inbound over UDP, dropped "oversize"
        unread; anything else read as usual unless the queue cut it short (over COPY_RANGE
        bytes), then it is judged by its source alone."""
        if len(payload) < COPY_RANGE:
            pkt = parse_packet(payload)
            if pkt is None:
                return self._unreadable(payload)
            if pkt.proto == "udp" and self._inbound(pkt.sport, pkt.dport, pkt.payload, hook):
                return self._by_source(self._key(pkt.src), tcp=False)
            return self._handle_general(payload, hook)
        return self._unreadable(payload)

    def _unreadable(self, payload: bytes) -> bool | bytes:
        """A packet parse_packet refused, or one the queue cut at COPY_RANGE bytes: a long enough
        one is judged by the source in its IP header, anything else is malformed."""
        if len(payload) >= self.udp_oversize:
            version = payload[0] >> 4
            raw = payload[12:16] if version == 4 else payload[8:24] if version == 6 else b""
            if raw and len(raw) in (4, 16):
                src = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
                proto = payload[9] if version == 4 else payload[6]
                return self._by_source(self._key(src), tcp=proto == socket.IPPROTO_TCP)
        self.counters["drop:malformed:ip"] += 1
        return self.monitor

    def _by_source(self, src: str, *, tcp: bool) -> bool:
        """A large packet not read as SIP: allow-listed sources pass, banned ones are dropped,
        a TCP segment passes (the kernel's limits counted it), a UDP one is "oversize"."""
        if self.engine.is_allowed(src):
            self.counters["pass:allow"] += 1
            return True
        if self.engine.is_banned(self.clock(), src):
            reason = "banned"
        elif tcp:
            self.counters["pass:truncated"] += 1
            return True
        else:
            reason = "oversize"
        self.counters[("would-drop:" if self.monitor else "drop:") + reason] += 1
        return self.monitor

    def _finish(self, verdict: Verdict, src: str) -> bool:
        if verdict.accept:
            self.counters["pass:" + verdict.reason] += 1
        else:
            self.counters[("would-drop:" if self.monitor else "drop:") + verdict.reason] += 1
            offenders = self.offenders
            offenders[src] = offenders.get(src, 0) + 1
            self.last_drop[src] = verdict.reason
            if len(offenders) > MAX_OFFENDERS:
                # keep the heaviest half: a bounded, approximate top list
                keep = sorted(offenders.items(), key=lambda kv: kv[1])[len(offenders) // 2:]
                self.offenders = dict(keep)
                self.last_drop = {ip: self.last_drop[ip] for ip, _ in keep
                                  if ip in self.last_drop}
        if verdict.actions:
            self.apply(verdict.actions)
        return verdict.accept or self.monitor

    # ------------------------------------------------------------------ actions

    def apply(self, actions: tuple[Action, ...] | list[Action]) -> None:
        for action in actions:
            if isinstance(action, Counted):
                self.failures.record(action.ip, action.aor, self.wall())
        if self.monitor:
            self._log_only(actions)
            return
        for action in actions:
            if isinstance(action, Ban):
                self._ban(action)
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
                self._kernel_locked.pop(action.ip, None)
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

    @property
    def set_errors(self) -> int:
        return self.enforce.set_errors

    def _ban(self, ban: Ban) -> None:
        self.enforce.ban(ban.ip, ban.seconds, kind=ban.kind, reason=ban.reason, aor=ban.aor,
                         failures=ban.failures)
        # from the deciding packet's arrival in the guard to the ban being in force
        latency = time.perf_counter() - self._t0
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
            if len(self._kernel_locked) > 100_000:
                self._kernel_locked.clear()
            self._kernel_locked[action.ip] = now + action.seconds

    def _mark_pair(self, mark: MarkPair) -> None:
        """A known-good pair, written from tick() and only when its stored time runs low."""
        now = self.clock()
        key = (mark.ip, mark.aor)
        answering = self._answering
        if answering is None:
            self._pair_ports.forget(mark.ip, mark.aor)
        else:
            self._pair_ports.note(mark.ip, mark.aor, answering[0], answering[1],
                                  now + mark.seconds)
            locked = self._kernel_locked.get(mark.ip)
            if locked is not None and locked > now:
                self.enforce.pass_pair(answering[0], answering[1], locked - now)
        until = self._pair_until.get(key)
        if until is not None and until - now > mark.seconds * KNOWN_REFRESH_SHARE:
            return
        if len(self._pair_until) > 200_000:
            self._pair_until.clear()
        self._pair_until[key] = now + mark.seconds
        self._pairs_pending[key] = max(1, math.ceil(mark.seconds))

    def flush_known(self) -> None:
        pending, self._known_pending = self._known_pending, {}
        wall = self.wall()
        for ip, seconds in pending.items():
            self.enforce.known(ip, seconds, now=wall)
        if self._pairs_pending:
            pairs, self._pairs_pending = self._pairs_pending, {}
            self.enforce.known_pairs([(ip, aor, seconds) for (ip, aor), seconds in pairs.items()],
                                     now=wall)

    # ------------------------------------------------------------------ lifecycle

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
        if self._known_pending or self._pairs_pending:
            self.flush_known()
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
                self._kernel_locked.pop(cmd.ip, None)
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
            "ban_latency": {"buckets": list(BAN_LATENCY_BUCKETS), "counts": self.ban_latency,
                            "sum": self.ban_latency_sum},
            "offenders": top,
            "offender_reasons": {ip: self.last_drop.get(ip, "") for ip, _ in top},
            "health": self.health.totals(self.clock()),
        }, now=self.wall())

    def snapshot(self) -> None:
        self.flush_known()
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
        self.monitor = cfg.guard.mode == "monitor"
        self.udp_oversize = cfg.limits.udp_oversize
        if cfg.limits.ipv6_prefix != self.v6_prefix:
            self.v6_prefix = cfg.limits.ipv6_prefix
            self._v6_keys = {}
        actions = self.engine.reload(with_runtime(cfg, self._runtime_allow))
        if actions:
            self.apply(actions)
        self.events.emit("reload", source=cfg.source)
