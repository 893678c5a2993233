"""The policy engine: one verdict per SIP packet, plus the ban/known decisions behind it.

Pure: no I/O and no clock — every call gets ``now`` (monotonic seconds). The guard feeds it
requests coming in from clients and the registrar's responses going out to them, and turns the
returned actions into ipset writes, SQLite rows and log events.

Requests, in order (first match wins):

1. allow list (``blacklist.allow``) -> accept "allow": never limited, never banned;
2. an active ban -> drop "suspended" / "banned" (normally the kernel drops them first); a
   REGISTER for a suspended endpoint (source, AOR) -> drop "suspended:pair" (pairs.py); a
   REGISTER for a protected account from a source that is not one of its known-good pairs ->
   drop "protected:account" (accounts.py); a REGISTER from a source in lockdown for an AOR that
   is not one of its known-good pairs -> drop "lockdown";
3. a scanner user agent (case-insensitive substring) -> drop "scanner", no ban (spoofable);
4. rate limits: a source inside a ``[[gateway]]`` network is charged to the group's shared
   bucket ("rate:gateway:<name>") instead of the per-source REGISTER ("rate:register") and
   all-request ("rate:sip") buckets;
5. the global admission budget (``limits.queue_budget``/s) for unknown sources -> "budget".
   Known-good sources (a recent authenticated registration) bypass it, and so do gateway
   members — a documented choice: they are declared by the operator and already bounded by their
   group's own budget, and an IP-authenticated trunk never registers, so it would otherwise
   never become known and could be starved by a spoofed flood.

Responses are always accepted but drive the learning: see nonces.py (nonces the registrar hands
to more than one client: a registrar setting to fix, reported, never relied on),
suspension.py (consecutive failures) and escalation.py (the blacklist tier: spraying, repeat
offenders, bans that double).
A success marks the source known-good for twice the granted expiry, and the (source, AOR) a
known-good pair for as long. A source holding a known-good pair, or inside a ``[[gateway]]``,
is shared-capable (an office NAT, a CGNAT): its proven failures count per (source, AOR) only,
and ``register_retry`` of them suspend that endpoint for ``suspend_time`` (escalating on
repeats, never into an address ban) instead of the address. Spraying from it (failures on
``auth_failures`` distinct AORs within the window) puts it in lockdown instead of a ban: for the
ban's length (escalating alike) only its known-good pairs' REGISTERs pass. Proven failures on one
account from ``account.sources`` distinct sources within ``blacklist.window`` protect the
account (distributed guessing): only its known-good pairs reach it until the protection ends.

Malformed packets are dropped "malformed:<reason>", except from allow-listed sources (accepted
"allow"); a banned source's malformed packet is reported as banned.

AORs are compared lower-cased (at most 256 characters kept), so case games cannot split an
account's failure count. Source addresses are used as given as table keys; the guard must pass
canonical text (``socket.inet_ntop`` form), an IPv6 source as the network address of its
``limits.ipv6_prefix`` (``addr.source_key``), so a host rotating through its /64 is one source;
allow-list and gateway entries longer than that prefix cover the whole prefix. Operator input to
ban()/unban() is canonicalised.

Beside it: what it reads of a message (views.py), the actions it asks of the guard (actions.py),
its state snapshot and stats (snapshot.py). Those run uncompiled: setup.py names the modules
mypyc compiles, and none of them is on the per-packet path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..addr import source_key
from ..config import Config
from . import snapshot
from .accounts import AccountProtection
from .actions import (
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
from .buckets import OVER_REGISTER, GatewayLimiter, SourceLimiter, TokenBucket
from .escalation import (
    KIND_BLACKLIST,
    KIND_MANUAL,
    KIND_SUSPEND,
    KINDS,
    BanRecord,
    BanTable,
    Blacklist,
    ban_length,
)
from .holds import Holds
from .lru import LruTable
from .netset import NetMap, NetSet, pack_ip
from .nonces import MAX_AOR_LEN, NonceTable, PendingTable
from .pairs import PairBan, Pairs, aor_key
from .snapshot import STATE_VERSION as STATE_VERSION
from .suspension import SuspensionCounters
from .views import AuthView, SipView
from .views import ChallengeView as ChallengeView

# Source tags cached in the limiter record; >= 0 is a gateway group index.
_TAG_PLAIN = -1
_TAG_ALLOW = -2

# User-Agent strings whose scanner check is remembered (emptied when full: a flood of random
# agents only costs the plain check).
_MAX_AGENTS_SEEN = 4096

# Distinct "malformed:<reason>" verdicts cached/counted; parser reasons are a small fixed set,
# the cap only guards against a parser that puts packet data in its reason.
_MAX_MALFORMED_REASONS = 64

# ---------------------------------------------------------------- what the engine says


@dataclass(frozen=True, slots=True)
class Verdict:
    """Accept or drop one packet, why, and what to do besides."""

    accept: bool
    reason: str
    actions: tuple[Action, ...] = ()


_OK = Verdict(True, "ok")
_ALLOW = Verdict(True, "allow")
_BANNED = Verdict(False, "banned")
_SUSPENDED = Verdict(False, "suspended")
_PAIR_SUSPENDED = Verdict(False, "suspended:pair")
_PROTECTED = Verdict(False, "protected:account")
_LOCKED = Verdict(False, "lockdown")
_SCANNER = Verdict(False, "scanner")
_RATE_REGISTER = Verdict(False, "rate:register")
_RATE_SIP = Verdict(False, "rate:sip")
_BUDGET = Verdict(False, "budget")

# Ban reasons (Ban.reason / BanRecord.reason for automatic bans).
REASON_CONSECUTIVE = "consecutive-failures"
REASON_SPRAYING = "spraying"
REASON_REPEAT = "repeat-offender"


def _seconds(value: float) -> int:
    return max(1, int(math.ceil(value)))


class Engine:
    """Verdicts for requests, learning from responses, bans and known-good sources."""

    __slots__ = (
        "_cfg", "_gen", "_allow", "_gw_map", "_scanners", "_ua_seen", "_gw_verdicts", "_decay",
        "_decay_override", "_limiter", "_gateways", "_budget", "_nonces", "_pending",
        "_counters", "_blacklist", "_bans", "_known", "_counts", "_malformed", "_pairs",
        "_accounts", "_lockdowns",
    )

    def __init__(
        self,
        cfg: Config,
        *,
        max_sources: int = 200_000,
        max_pending: int = 200_000,
        max_nonces: int | None = None,
        max_bans: int | None = None,
        nonce_ttl: float = 600.0,
        pending_ttl: float = 32.0,
        counter_ttl: float = 3600.0,
        escalation_decay: float | None = None,
    ) -> None:
        """Caps bound every table: ``max_sources`` each per-source table (buckets, known,
        counters, blacklist windows), ``max_pending`` the pending requests, ``max_nonces``
        (default max_pending) the issued nonces, ``max_bans`` (default max_sources) the bans.

        ``nonce_ttl``: how long an issued nonce proves an address (about twice the registrar's
        nonce lifetime); ``pending_ttl``: how long a request waits for its answer;
        ``counter_ttl``: idle time after which consecutive-failure counters are forgotten;
        ``escalation_decay``: time after a blacklist ban ends before its escalation level
        resets (default ``blacklist.max_ban_time``).
        """
        lim = cfg.limits
        self._limiter = SourceLimiter(
            lim.register_rate, lim.register_burst, lim.sip_rate, lim.sip_burst, max_sources
        )
        self._gateways = GatewayLimiter([])
        self._budget = TokenBucket(lim.queue_budget, lim.queue_budget)
        self._nonces = NonceTable(max_nonces or max_pending, nonce_ttl)
        self._pending = PendingTable(max_pending, pending_ttl)
        self._counters = SuspensionCounters(max_sources, counter_ttl)
        self._blacklist = Blacklist(max_sources)
        self._bans = BanTable(max_bans or max_sources)
        self._known: LruTable[str, float] = LruTable(max_sources)  # ip -> until
        self._pairs = Pairs(max_sources, max_bans or max_sources)
        self._accounts = AccountProtection(max_sources)
        self._lockdowns = Holds(max_bans or max_sources)
        self._counts: dict[str, int] = {}
        self._malformed: dict[str, Verdict] = {}
        self._decay_override = escalation_decay
        self._gen = 0
        self._apply(cfg)

    # ------------------------------------------------------------ configuration

    def _apply(self, cfg: Config) -> None:
        self._cfg = cfg
        self._gen += 1  # cached source tags are recomputed on next use
        # IPv6 sources arrive keyed by their limits.ipv6_prefix network (the guard's job)
        prefix = cfg.limits.ipv6_prefix
        self._allow = NetSet(cfg.blacklist.allow, prefix)
        self._gw_map: NetMap[int] = NetMap(
            ((cidr, index) for index, gw in enumerate(cfg.gateways) for cidr in gw.sources),
            prefix,
        )
        self._scanners = tuple(ua.lower() for ua in cfg.scanner.user_agents)
        self._ua_seen: dict[str, bool] = {}
        self._gw_verdicts = tuple(Verdict(False, f"rate:gateway:{gw.name}") for gw in cfg.gateways)
        lim = cfg.limits
        self._limiter.configure(lim.register_rate, lim.register_burst, lim.sip_rate, lim.sip_burst)
        self._gateways.configure([(gw.name, gw.cps) for gw in cfg.gateways])
        self._budget.reconfigure(lim.queue_budget, lim.queue_budget)
        decay = self._decay_override
        self._decay = float(cfg.blacklist.max_ban_time if decay is None else decay)

    @property
    def counter_ttl(self) -> float:
        """Idle time after which a consecutive-failure counter is forgotten."""
        return self._counters.ttl

    @property
    def config(self) -> Config:
        """The settings in force."""
        return self._cfg

    def reload(self, cfg: Config) -> tuple[Action, ...]:
        """New settings (SIGHUP), keeping all state. Returns Unban actions for banned sources
        the new allow list now covers."""
        self._apply(cfg)
        actions: list[Action] = []
        for ip in self._bans.ips():
            if self._is_allowed(ip):
                self._bans.remove(ip)
                self._counters.forget_source(ip)
                self._blacklist.forget(ip)
                actions.append(Unban(ip, "allow-listed"))
        for ip in self._pairs.sources_suspended():
            if self._is_allowed(ip):
                actions.extend(LiftPair(b.src, b.aor, "allow-listed")
                               for b in self._pairs.lift(ip))
        for ip, _until, _level in self._lockdowns.active(float("-inf")):
            if self._is_allowed(ip) and self._lockdowns.lift(float("-inf"), ip):
                actions.append(LiftLockdown(ip, "allow-listed"))
        return tuple(actions)

    # ------------------------------------------------------------ classification

    def _is_allowed(self, ip: str) -> bool:
        return bool(self._allow) and self._allow.lookup_parsed(pack_ip(ip)) is not None

    def _classify(self, src: str) -> int:
        if not self._allow and not self._gw_map:
            return _TAG_PLAIN
        parsed = pack_ip(src)
        if self._allow and self._allow.lookup_parsed(parsed) is not None:
            return _TAG_ALLOW
        if not self._gw_map:
            return _TAG_PLAIN
        group = self._gw_map.lookup_parsed(parsed)
        return _TAG_PLAIN if group is None else group

    def _is_scanner(self, user_agent: str) -> bool:
        # A fleet of phones repeats a handful of User-Agent strings: remember the answers.
        seen = self._ua_seen.get(user_agent)
        if seen is not None:
            return seen
        if len(self._ua_seen) >= _MAX_AGENTS_SEEN:
            self._ua_seen.clear()
        seen = self._ua_seen[user_agent] = self._match_scanner(user_agent)
        return seen

    def _match_scanner(self, user_agent: str) -> bool:
        low = user_agent.lower()
        # A plain loop, not any(genexpr) or a regex: measured clearly faster on the hot path.
        for pattern in self._scanners:  # noqa: SIM110
            if pattern in low:
                return True
        return False

    def _source_key(self, ip: str) -> str:
        """Operator input as a table key: canonical, an IPv6 address as its prefix network."""
        return source_key(ip, self._cfg.limits.ipv6_prefix)

    def is_allowed(self, ip: str) -> bool:
        """Is ip on the allow list?"""
        return self._is_allowed(ip)

    def _count(self, key: str) -> None:
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1

    # ------------------------------------------------------------ packets

    def on_request(self, now: float, src: str, msg: SipView, proven: bool = False) -> Verdict:
        """Verdict for a request from client ``src``. ``proven``: the request really comes from
        ``src`` (a TCP connection, or a UDP REGISTER whose credentials carry the guard's proof
        of receipt for src); only then can its answer count for or against src."""
        counts = self._counts
        limiter = self._limiter
        rec = limiter.record(now, src)
        if rec is None:
            rec = limiter.add(now, src, self._classify(src), self._gen)
        elif rec.gen != self._gen:
            rec.tag = self._classify(src)
            rec.gen = self._gen
        tag = rec.tag
        if tag == _TAG_ALLOW:
            verdict = _ALLOW
        elif (ban := self._bans.get(src, now)) is not None:
            verdict = _SUSPENDED if ban.kind == KIND_SUSPEND else _BANNED
        elif self._pairs.source_suspended(src) and msg.method == "REGISTER" and self._pair_hit(
                now, src, msg):
            verdict = _PAIR_SUSPENDED
        elif len(self._accounts) and msg.method == "REGISTER" and self._account_hit(
                now, src, msg):
            verdict = _PROTECTED
        elif len(self._lockdowns) and msg.method == "REGISTER" and self._locked(now, src, msg):
            verdict = _LOCKED
        elif (ua := msg.user_agent) is not None and self._is_scanner(ua):
            verdict = _SCANNER
        else:
            method = msg.method
            if tag >= 0:
                # Gateway members: their group's bucket only (see module docstring).
                if not self._gateways.take(now, tag):
                    verdict = self._gw_verdicts[tag]
                    counts[verdict.reason] = counts.get(verdict.reason, 0) + 1
                    return verdict
            else:
                code = limiter.admit(now, rec, method == "REGISTER")
                if code:
                    verdict = _RATE_REGISTER if code == OVER_REGISTER else _RATE_SIP
                    counts[verdict.reason] = counts.get(verdict.reason, 0) + 1
                    return verdict
                if self._known.peek(src, now) is None and not self._budget.take(now):
                    counts["budget"] = counts.get("budget", 0) + 1
                    return _BUDGET
            if method == "REGISTER" and (auth := msg.authorization) is not None:
                self._track(now, src, msg, auth, proven)
            verdict = _OK
        counts[verdict.reason] = counts.get(verdict.reason, 0) + 1
        return verdict

    @staticmethod
    def _register_aor(msg: SipView) -> str | None:
        """The AOR a REGISTER's outcome is counted for (the To user, else the digest user)."""
        aor = msg.aor
        if aor is None:
            auth = msg.authorization
            aor = None if auth is None else auth.username
            if aor is None:
                return None
        return aor_key(aor)

    def _pair_hit(self, now: float, src: str, msg: SipView) -> bool:
        """Is this REGISTER's endpoint (src, its AOR as counted) suspended?"""
        aor = self._register_aor(msg)
        return aor is not None and self._pairs.suspended(now, src, aor) is not None

    def _locked(self, now: float, src: str, msg: SipView) -> bool:
        """Is src in lockdown, and this REGISTER's AOR not one of its known-good pairs?"""
        if self._lockdowns.until(now, src) is None:
            return False
        aor = self._register_aor(msg)
        return aor is None or not self._pairs.is_known(now, src, aor)

    def _account_hit(self, now: float, src: str, msg: SipView) -> bool:
        """Is this REGISTER's account protected, and src not one of its known-good pairs?"""
        aor = self._register_aor(msg)
        return (aor is not None and self._accounts.until(now, aor) is not None
                and not self._pairs.is_known(now, src, aor))

    def _track(self, now: float, src: str, msg: SipView, auth: AuthView, proven: bool) -> None:
        call_id = msg.call_id
        cseq = msg.cseq_num
        if proven and auth.nonce and call_id is not None and cseq is not None:
            aor = msg.aor or auth.username or ""
            self._pending.add(now, src, call_id, cseq, aor.lower())
        else:
            self._count("unproven")

    def on_response(self, now: float, client: str, msg: SipView) -> Verdict:
        """Learn from a response going out to ``client``; always accepted."""
        self._count("responses")
        status = msg.status
        if status is None or status < 200:
            return _OK
        if status == 401 or status == 407:
            for challenge in msg.challenges:
                if challenge.nonce and self._nonces.issue(now, client, challenge.nonce):
                    self._count("shared_nonces")
        call_id = msg.call_id
        cseq = msg.cseq_num
        if msg.cseq_method != "REGISTER" or call_id is None or cseq is None:
            return _OK
        aor = self._pending.take(now, client, call_id, cseq)
        if aor is None:
            return _OK
        if status < 300:
            return self._success(now, client, aor, msg.granted_expires)
        if status == 401 or status == 407:
            if any(challenge.stale for challenge in msg.challenges):
                self._count("stale")
                return _OK
            return self._failure(now, client, aor)
        if status == 403:
            return self._failure(now, client, aor)
        return _OK

    def on_unparseable(self, now: float, src: str, reason: str) -> Verdict:
        """Verdict for a packet that is not parseable SIP."""
        if self._is_allowed(src):
            self._count("allow")
            return _ALLOW
        ban = self._bans.get(src, now)
        if ban is not None:
            verdict = _SUSPENDED if ban.kind == KIND_SUSPEND else _BANNED
            self._count(verdict.reason)
            return verdict
        cached = self._malformed.get(reason)
        if cached is None:
            verdict = Verdict(False, f"malformed:{reason}")
            if len(self._malformed) < _MAX_MALFORMED_REASONS:
                self._malformed[reason] = verdict
            else:
                self._count("malformed:other")
                return verdict
        else:
            verdict = cached
        self._count(verdict.reason)
        return verdict

    # ------------------------------------------------------------ learning

    def _success(self, now: float, src: str, aor: str, expires: int | None) -> Verdict:
        self._count("successes")
        self._counters.success(src, aor)
        self._blacklist.success(src, aor)
        self._accounts.success(src, aor)
        if not expires or expires <= 0:
            expires = self._cfg.registrar.expire
        until = now + 2 * expires
        pair_until = self._pairs.mark(now, src, aor, until)
        previous = self._known.peek(src, now)
        if previous is not None and previous > until:
            until = previous  # behind a NAT, another phone may hold it longer
        self._known.put(src, until, until, now)
        return Verdict(True, "ok", (MarkKnown(src, _seconds(until - now)),
                                    MarkPair(src, aor, _seconds(pair_until - now))))

    def report(self, now: float, src: str, aor: str, ok: bool,
               expires: int | None = None) -> tuple[Action, ...]:
        """An outcome the registrar told directly (TLS, which the guard cannot read): the
        source is proven by its TLS connection, so it counts like an answer seen going out."""
        aor = aor.lower()[:MAX_AOR_LEN]
        if self._is_allowed(src):
            return ()
        verdict = self._success(now, src, aor, expires) if ok else self._failure(now, src, aor)
        return verdict.actions

    def count_failure(self, now: float, src: str, aor: str) -> tuple[Action, ...]:
        """Count a proven failure again (journal replay after a restart); the ban actions it
        leads to, if any (none for a ban already in force)."""
        return tuple(a for a in self._failure(now, src, aor).actions
                     if not isinstance(a, Counted))

    def _shared(self, now: float, src: str) -> bool:
        """Is src shared-capable: a known-good pair, or a ``[[gateway]]`` member?"""
        if self._pairs.shared(now, src):
            return True
        return bool(self._gw_map) and self._gw_map.lookup_parsed(pack_ip(src)) is not None

    def _failure(self, now: float, src: str, aor: str) -> Verdict:
        self._count("failures")
        counted: tuple[Action, ...] = (Counted(src, aor),)
        cfg = self._cfg
        bl = cfg.blacklist
        shared = self._shared(now, src)
        if shared and self._pairs.suspended(now, src, aor) is not None:
            return Verdict(True, "ok", counted)  # a late answer: the endpoint is suspended
        sprayed = self._blacklist.failure(now, src, aor, bl.auth_failures, bl.window)
        consecutive = 0
        if cfg.suspension.enabled:
            retry = cfg.suspension.register_retry
            consecutive = (self._counters.failure_pair(now, src, aor, retry) if shared
                           else self._counters.failure(now, src, aor, retry))
        actions: tuple[Action, ...] = ()
        if sprayed and shared:
            actions = self._lockdown(now, src, sprayed)
        elif sprayed:
            actions = self._blacklist_ban(now, src, aor, sprayed, REASON_SPRAYING)
        elif consecutive and shared:
            actions = self._suspend_pair(now, src, aor, consecutive)
        elif consecutive:
            if self._blacklist.suspension(now, src, bl.window):
                actions = self._blacklist_ban(now, src, aor, consecutive, REASON_REPEAT)
            else:
                seconds = cfg.suspension.suspend_time
                rec = BanRecord(
                    src, now + seconds, REASON_CONSECUTIVE, KIND_SUSPEND, aor, consecutive
                )
                actions = self._impose(now, rec, seconds)
        if cfg.account.protect:
            actions += self._protect(now, src, aor)
        return Verdict(True, "ok", counted + actions)

    def _lockdown(self, now: float, src: str, failures: int) -> tuple[Action, ...]:
        """Spraying from a shared-capable source: lock it down for a ban's length (escalating
        alike) instead of banning its neighbours with it; the allow list wins."""
        if self._is_allowed(src):
            self._count("ban_refused:allow")
            return ()
        bl = self._cfg.blacklist
        level = self._blacklist.next_level(now, src)
        seconds = ban_length(level, bl.ban_time, bl.escalation, bl.max_ban_time)
        current = self._lockdowns.until(now, src)
        if current is not None and current >= now + seconds:
            return ()
        self._blacklist.record_ban(now, src, level, now + seconds, self._decay)
        self._lockdowns.put(now, src, now + seconds, level)
        self._count("lockdown")
        return (Lockdown(src, seconds, failures, level),)

    def _protect(self, now: float, src: str, aor: str) -> tuple[Action, ...]:
        """Count a proven failure against the account; protect it at the distinct-source
        threshold."""
        cfg = self._cfg
        bl = cfg.blacklist
        hit = self._accounts.failure(
            now, src, aor, threshold=cfg.account.sources, window=bl.window,
            base=cfg.suspension.suspend_time, escalation=bl.escalation,
            max_time=bl.max_ban_time, decay=self._decay)
        if hit is None:
            return ()
        seconds, sources = hit
        self._count("protect:account")
        return (ProtectAccount(aor, seconds, sources, self._accounts.level(now, aor)),)

    def _suspend_pair(self, now: float, src: str, aor: str, failures: int) -> tuple[Action, ...]:
        """Suspend one endpoint of a shared-capable source (the allow list wins)."""
        if self._is_allowed(src):
            self._count("ban_refused:allow")
            return ()
        cfg = self._cfg
        ban = self._pairs.suspend(
            now, src, aor, failures, suspend_time=cfg.suspension.suspend_time,
            escalation=cfg.blacklist.escalation, max_time=cfg.blacklist.max_ban_time,
            window=cfg.blacklist.window)
        self._count("ban:pair")
        return (SuspendPair(src, aor, _seconds(ban.until - now), ban.reason, ban.failures,
                            ban.level),)

    def _blacklist_ban(
        self, now: float, src: str, aor: str, failures: int, reason: str
    ) -> tuple[Action, ...]:
        bl = self._cfg.blacklist
        level = self._blacklist.next_level(now, src)
        seconds = ban_length(level, bl.ban_time, bl.escalation, bl.max_ban_time)
        rec = BanRecord(src, now + seconds, reason, KIND_BLACKLIST, aor, failures, level)
        actions = self._impose(now, rec, seconds)
        if actions:
            self._blacklist.record_ban(now, src, level, rec.until, self._decay)
            self._counters.success(src, aor)  # a fresh count once the ban is over
        return actions

    def _impose(self, now: float, rec: BanRecord, seconds: int) -> tuple[Action, ...]:
        if self._is_allowed(rec.ip):
            self._count("ban_refused:allow")
            return ()
        current = self._bans.get(rec.ip, now)
        if current is not None and current.until >= rec.until:
            return ()  # never shorten a ban (e.g. a late answer while already banned)
        self._bans.add(rec, now)  # may drop the ban closest to expiry: see stats evicted:bans
        self._count(f"ban:{rec.kind}")
        return (Ban(rec.ip, seconds, rec.reason, rec.kind, rec.aor, rec.failures),)

    # ------------------------------------------------------------ operator actions

    def ban(
        self, now: float, ip: str, seconds: float, reason: str = "manual"
    ) -> tuple[Action, ...]:
        """Operator ban (replaces any current ban of ip). ValueError for a bad address, a
        non-positive length, or an allow-listed address."""
        ip = self._source_key(ip)
        secs = _seconds(seconds) if seconds > 0 else 0  # 0 (or NaN): refused by restore_ban
        self.restore_ban(now, ip, secs, reason, KIND_MANUAL)
        self._count("ban:manual")
        return (Ban(ip, secs, reason, KIND_MANUAL),)

    def restore_ban(
        self,
        now: float,
        ip: str,
        seconds: float,
        reason: str,
        kind: str,
        aor: str | None = None,
        failures: int = 0,
        level: int = 0,
    ) -> None:
        """Record a ban decided elsewhere (a persisted row, an operator command already written
        to the kernel and store): no actions. Replaces any current ban of ip. ValueError for a
        bad address, kind or length, or an allow-listed address (the allow list wins)."""
        ip = self._source_key(ip)
        if self._is_allowed(ip):
            raise ValueError(f"{ip} is on the allow list and is never banned")
        if kind not in KINDS:
            raise ValueError(f"unknown ban kind {kind!r}")
        if not seconds > 0:
            raise ValueError("ban length must be > 0 seconds")
        self._bans.remove(ip)
        self._bans.add(BanRecord(ip, now + seconds, reason, kind, aor, failures, level), now)

    def unban(self, now: float, ip: str, reason: str = "manual") -> tuple[Action, ...]:
        """Operator unban: lifts any ban of ip and forgets its offence and escalation history.
        Always returns the Unban (the kernel set may hold it even if this table does not)."""
        ip = self._source_key(ip)
        self._bans.remove(ip)
        self._counters.forget_source(ip)
        self._blacklist.forget(ip)
        self._count("unban")
        lifted = tuple(LiftPair(b.src, b.aor, reason) for b in self._pairs.lift(ip))
        unlocked = (LiftLockdown(ip, reason),) if self._lockdowns.lift(now, ip) else ()
        return (Unban(ip, reason), *lifted, *unlocked)

    # ------------------------------------------------------------ queries

    def is_banned(self, now: float, ip: str) -> bool:
        """Is ip under an active ban of any kind?"""
        return self._bans.get(ip, now) is not None

    def ban_of(self, now: float, ip: str) -> BanRecord | None:
        """The active ban of ip, if any."""
        return self._bans.get(ip, now)

    def active_bans(self, now: float) -> list[BanRecord]:
        """Active bans, soonest to expire first."""
        return self._bans.active(now)

    def is_known(self, now: float, ip: str) -> bool:
        """Did ip complete an authenticated registration recently enough to be known-good?"""
        return self._known.peek(ip, now) is not None

    def known_sources(self, now: float) -> list[tuple[str, float]]:
        """(ip, remaining seconds) of the known-good sources."""
        return [(ip, until - now) for ip, until, _ in self._known.items(now)]

    @property
    def pairs(self) -> Pairs:
        """Known-good pairs and endpoint suspensions, for queries (AORs as ``aor_key``)."""
        return self._pairs

    def is_shared(self, now: float, ip: str) -> bool:
        """Is ip shared-capable (a known-good pair, or a gateway member)?"""
        return self._shared(now, ip)

    def ended_pairs(self, now: float) -> tuple[Action, ...]:
        """Endpoint suspensions and account protections that are over since the last call (the
        guard's end hook)."""
        return (*(LiftPair(b.src, b.aor, "expired") for b in self._pairs.ended(now)),
                *(LiftAccount(aor, "expired") for aor in self._accounts.expired(now)),
                *(LiftLockdown(ip, "expired") for ip in self._lockdowns.expired(now)))

    @property
    def lockdowns(self) -> Holds:
        """Sources in lockdown, for queries."""
        return self._lockdowns

    def restore_lockdown(self, now: float, ip: str, seconds: float, level: int) -> None:
        """A lockdown persisted in the store (expired or allow-listed ones are ignored)."""
        if seconds > 0 and not self._is_allowed(ip):
            self._lockdowns.put(now, ip, now + seconds, level)

    @property
    def accounts(self) -> AccountProtection:
        """Protected accounts, for queries (AORs as ``aor_key``)."""
        return self._accounts

    def lift_account(self, now: float, aor: str, reason: str = "manual") -> tuple[Action, ...]:
        """Operator: end an account's protection and forget its failing sources."""
        key = aor_key(aor)
        return (LiftAccount(key, reason),) if self._accounts.lift(now, key) else ()

    def restore_account(self, now: float, aor: str, seconds: float, level: int) -> None:
        """An account protection persisted in the store (expired ones are ignored)."""
        if seconds > 0:
            self._accounts.restore(now, {"protected": [[aor_key(aor), seconds, level]]},
                                   self._cfg.blacklist.window, self._decay)

    def restore_pair(self, now: float, ip: str, aor: str, seconds: float,
                     ban: tuple[int, int] | None = None) -> None:
        """A known-good pair persisted elsewhere (the store) or, with ``ban`` (failures,
        level), an endpoint suspension; allow-listed or expired ones are ignored."""
        if seconds > 0 and not self._is_allowed(ip):
            key, until = aor_key(aor), now + seconds
            if ban is None:
                self._pairs.mark(now, ip, key, until)
            else:
                self._pairs.restore_ban(now, PairBan(ip, key, until, *ban),
                                        self._cfg.blacklist.window)

    def sweep(self, now: float, limit: int = 1000) -> int:
        """Drop expired entries from the cold end of the idle-expiry tables; the guard may call
        this now and then (each table is bounded anyway)."""
        removed = self._limiter.table.sweep(now, limit)
        removed += self._nonces.table.sweep(now, limit)
        removed += self._pending.table.sweep(now, limit)
        removed += self._counters.by_source.sweep(now, limit)
        removed += self._counters.by_aor.sweep(now, limit)
        for table in self._pairs.tables.values():
            removed += table.sweep(now, limit)
        for name, table in self._accounts.tables.items():
            if name != "account_protected":  # ended ones stay until ended_pairs() reports them
                removed += table.sweep(now, limit)
        return removed

    def nonce_holder(self, now: float, nonce: str) -> str | None:
        """The client a registrar nonce was first issued to (within the nonce ttl)."""
        return self._nonces.table.peek(nonce, now)

    def stats_value(self, key: str) -> int:
        """One learning counter (e.g. "shared_nonces"), without building every stat."""
        return self._counts.get(key, 0)

    def _tables(self) -> dict[str, LruTable[Any, Any]]:
        return {
            "sources": self._limiter.table,
            "nonces": self._nonces.table,
            "pending": self._pending.table,
            "known": self._known,
            "counters_source": self._counters.by_source,
            "counters_aor": self._counters.by_aor,
            **self._blacklist.tables,
            **self._pairs.tables,
            **self._accounts.tables,
            "lockdowns": self._lockdowns.table,
        }

    def stats(self) -> dict[str, int]:
        """Table sizes, LRU evictions, verdicts by reason and learning/ban counters (see
        snapshot.stats)."""
        reasons = [v.reason for v in self._gw_verdicts]
        out = snapshot.stats(self._tables(), self._bans, self._counts, reasons)
        out["table:pair_bans"] = len(self._pairs)
        out["evicted:pair_bans"] = self._pairs.evicted
        return out

    # ------------------------------------------------------------ persistence

    def export_state(self, now: float) -> dict[str, Any]:
        """JSON-serialisable snapshot of what must survive a restart; times are relative to
        ``now`` (remaining / ago), so it can be restored against another monotonic clock."""
        state = snapshot.export_state(now, self._bans, self._known, self._counters,
                                      self._blacklist)
        state["pairs"] = self._pairs.export(now)  # known-good pairs live in the store
        state["accounts"] = self._accounts.export(now)
        state["lockdowns"] = self._lockdowns.export(now)
        return state

    def restore_state(self, now: float, state: dict[str, Any]) -> None:
        """Replace the learned state with a snapshot from export_state(). Bans of sources the
        current allow list covers are dropped. ValueError on an unknown snapshot version."""
        bans = BanTable(self._bans.cap)
        known: LruTable[str, float] = LruTable(self._known.cap)
        counters = SuspensionCounters(self._counters.by_source.cap, self._counters.ttl)
        blacklist = Blacklist(self._limiter.table.cap)
        snapshot.restore_state(now, state, bans, known, counters, blacklist,
                               is_allowed=self._is_allowed,
                               window=self._cfg.blacklist.window, decay=self._decay)
        pairs = self._pairs.rebuilt(now, state.get("pairs"), self._cfg.blacklist.window,
                                    self._is_allowed)
        accounts = AccountProtection(self._limiter.table.cap)
        found = state.get("accounts")
        if isinstance(found, dict):
            accounts.restore(now, found, self._cfg.blacklist.window, self._decay)
        self._bans, self._known, self._counters, self._blacklist, self._pairs = (
            bans, known, counters, blacklist, pairs)
        self._accounts = accounts
        lockdowns = Holds(self._lockdowns.table.cap)
        lockdowns.restore(now, [item for item in state.get("lockdowns") or ()
                                if not self._is_allowed(str(item[0]))])
        self._lockdowns = lockdowns
