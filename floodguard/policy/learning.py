"""What the policy engine learns from the registrar's answers: known-good sources and pairs,
failures, and the bans, suspensions, lockdowns and account protections they lead to.

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
"""

from __future__ import annotations

from .actions import (
    Action,
    Ban,
    Counted,
    Lockdown,
    MarkKnown,
    MarkPair,
    ProtectAccount,
    SuspendPair,
)
from .escalation import (
    KIND_BLACKLIST,
    KIND_SUSPEND,
    BanRecord,
    ban_length,
)
from .nonces import MAX_AOR_LEN
from .tables import EngineTables, seconds_of
from .verdict import OK, REASON_CONSECUTIVE, REASON_REPEAT, REASON_SPRAYING, Verdict
from .views import SipView


class Learning(EngineTables):
    """Responses and registrar reports -> known-good marks, failure counts, bans and holds."""

    __slots__ = ()

    def on_response(self, now: float, client: str, msg: SipView) -> Verdict:
        """Learn from a response going out to ``client``; always accepted."""
        self._count("responses")
        status = msg.status
        if status is None or status < 200:
            return OK
        if status == 401 or status == 407:
            for challenge in msg.challenges:
                if challenge.nonce and self._nonces.issue(now, client, challenge.nonce):
                    self._count("shared_nonces")
        call_id = msg.call_id
        cseq = msg.cseq_num
        if msg.cseq_method != "REGISTER" or call_id is None or cseq is None:
            return OK
        aor = self._pending.take(now, client, call_id, cseq)
        if aor is None:
            return OK
        if status < 300:
            return self._success(now, client, aor, msg.granted_expires)
        if status == 401 or status == 407:
            if any(challenge.stale for challenge in msg.challenges):
                self._count("stale")
                return OK
            return self._failure(now, client, aor)
        if status == 403:
            return self._failure(now, client, aor)
        return OK

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
        return Verdict(True, "ok", (MarkKnown(src, seconds_of(until - now)),
                                    MarkPair(src, aor, seconds_of(pair_until - now))))

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
        return (SuspendPair(src, aor, seconds_of(ban.until - now), ban.reason, ban.failures,
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

