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

Beside it: its tables, settings and source classification (tables.py), what it learns from the
registrar's answers (learning.py, which Engine extends), its verdicts (verdict.py), what it reads
of a message (views.py), the actions it asks of the guard (actions.py), its state snapshot and
stats (snapshot.py). The last three run uncompiled: setup.py names the modules mypyc compiles,
and none of them is on the per-packet path.
"""

from __future__ import annotations

from typing import Any

from ..config import Config
from . import snapshot
from .accounts import AccountProtection
from .actions import (
    Action,
    Ban,
    LiftAccount,
    LiftLockdown,
    LiftPair,
    Unban,
)
from .buckets import OVER_REGISTER
from .escalation import (
    KIND_MANUAL,
    KIND_SUSPEND,
    KINDS,
    BanRecord,
    BanTable,
    Blacklist,
)
from .holds import Holds
from .learning import Learning
from .lru import LruTable
from .pairs import PairBan, Pairs, aor_key
from .snapshot import STATE_VERSION as STATE_VERSION
from .suspension import SuspensionCounters
from .tables import TAG_ALLOW, seconds_of
from .verdict import (
    ALLOW,
    BANNED,
    BUDGET,
    REQ_ALLOW,
    REQ_BANNED,
    REQ_LOCKED,
    REQ_OK,
    REQ_PAIR_SUSPENDED,
    REQ_PROTECTED,
    REQ_RATE_REGISTER,
    REQ_RATE_SIP,
    REQ_SCANNER,
    REQ_SUSPENDED,
    SUSPENDED,
    Verdict,
)
from .verdict import REASON_CONSECUTIVE as REASON_CONSECUTIVE
from .verdict import REASON_REPEAT as REASON_REPEAT
from .verdict import REASON_SPRAYING as REASON_SPRAYING
from .views import AuthView, SipView
from .views import ChallengeView as ChallengeView

# Distinct "malformed:<reason>" verdicts cached/counted; parser reasons are a small fixed set,
# the cap only guards against a parser that puts packet data in its reason.
_MAX_MALFORMED_REASONS = 64


class Engine(Learning):
    """Verdicts for requests, learning from responses, bans and known-good sources."""

    __slots__ = ()

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
        # read once: the verdict carries it to the guard's admission meter
        known = 1 if self._known.peek(src, now) is not None else 0
        if tag == TAG_ALLOW:
            verdict = REQ_ALLOW[known]
        elif (ban := self._bans.get(src, now)) is not None:
            verdict = (REQ_SUSPENDED if ban.kind == KIND_SUSPEND else REQ_BANNED)[known]
        elif self._pairs.source_suspended(src) and msg.method == "REGISTER" and self._pair_hit(
                now, src, msg):
            verdict = REQ_PAIR_SUSPENDED[known]
        elif len(self._accounts) and msg.method == "REGISTER" and self._account_hit(
                now, src, msg):
            verdict = REQ_PROTECTED[known]
        elif len(self._lockdowns) and msg.method == "REGISTER" and self._locked(now, src, msg):
            verdict = REQ_LOCKED[known]
        elif (ua := msg.user_agent) is not None and self._is_scanner(ua):
            verdict = REQ_SCANNER[known]
        else:
            method = msg.method
            if tag >= 0:
                # Gateway members: their group's bucket only (see module docstring).
                if not self._gateways.take(now, tag):
                    verdict = self._gw_verdicts[tag][known]
                    counts[verdict.reason] = counts.get(verdict.reason, 0) + 1
                    return verdict
            else:
                code = limiter.admit(now, rec, method == "REGISTER")
                if code:
                    verdict = (REQ_RATE_REGISTER if code == OVER_REGISTER
                               else REQ_RATE_SIP)[known]
                    counts[verdict.reason] = counts.get(verdict.reason, 0) + 1
                    return verdict
                if not known and not self._budget.take(now):
                    counts["budget"] = counts.get("budget", 0) + 1
                    return BUDGET
            if method == "REGISTER" and (auth := msg.authorization) is not None:
                self._track(now, src, msg, auth, proven)
            verdict = REQ_OK[known]
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

    def on_unparseable(self, now: float, src: str, reason: str) -> Verdict:
        """Verdict for a packet that is not parseable SIP."""
        if self._is_allowed(src):
            self._count("allow")
            return ALLOW
        ban = self._bans.get(src, now)
        if ban is not None:
            verdict = SUSPENDED if ban.kind == KIND_SUSPEND else BANNED
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

    # ------------------------------------------------------------ operator actions

    def ban(
        self, now: float, ip: str, seconds: float, reason: str = "manual"
    ) -> tuple[Action, ...]:
        """Operator ban (replaces any current ban of ip). ValueError for a bad address, a
        non-positive length, or an allow-listed address."""
        ip = self._source_key(ip)
        secs = seconds_of(seconds) if seconds > 0 else 0  # 0 (or NaN): refused by restore_ban
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
        reasons = [v[0].reason for v in self._gw_verdicts]
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

