"""The policy engine: every rule of REFERENCE.md/DESIGN.md, with a fake registrar in front.

Messages are small fake dataclasses satisfying the engine's SipView protocol; time is a plain
float the harness moves by hand.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from floodguard.config import (
    AccountConfig,
    BlacklistConfig,
    Config,
    GatewayConfig,
    LimitsConfig,
    ScannerConfig,
    SuspensionConfig,
)
from floodguard.policy import Ban, Counted, Engine, MarkKnown, SipView, Unban, Verdict

NAT = "203.0.113.10"
ATTACKER = "198.51.100.66"
VICTIM = "192.0.2.20"


# ---------------------------------------------------------------- fakes


@dataclass(frozen=True, slots=True)
class Auth:
    username: str | None
    nonce: str | None
    realm: str | None = "floodguard"


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: str | None
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Msg:
    is_request: bool = True
    method: str | None = "REGISTER"
    status: int | None = None
    call_id: str | None = "call-1"
    cseq_num: int | None = 1
    cseq_method: str | None = "REGISTER"
    aor: str | None = "alice@example.com"
    user_agent: str | None = "Yealink SIP-T46S"
    authorization: Auth | None = None
    challenges: tuple[Challenge, ...] = ()
    granted_expires: int | None = None


def _as_view(msg: Msg) -> SipView:
    return msg  # the fakes satisfy the protocol (checked statically)


@dataclass
class Harness:
    """An engine plus a fake registrar: answers and nonces as a real one would send them.

    Each request moves time on by ``step`` seconds (0.25: 4 REGISTERs/s per source, under the
    default 5/s) so long flows are not cut by the rate limits; limit tests use step=0.
    """

    cfg: Config = field(default_factory=Config)
    now: float = 1000.0
    step: float = 0.25
    kwargs: dict = field(default_factory=dict)
    actions: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.eng = Engine(self.cfg, **self.kwargs)
        self._nonce = 0
        self._call = 0
        # (client, nonce) of every challenge sent: what the guard's proof token stands for
        self.proofs: set[tuple[str, str]] = set()

    # low level ----------------------------------------------------------
    def req(self, src: str, msg: Msg) -> Verdict:
        self.now += self.step
        auth = msg.authorization
        proven = auth is not None and (src, auth.nonce) in self.proofs
        v = self.eng.on_request(self.now, src, _as_view(msg), proven)
        self.actions.extend(v.actions)
        return v

    def resp(self, client: str, msg: Msg) -> Verdict:
        v = self.eng.on_response(self.now, client, _as_view(msg))
        assert v.accept  # answers are never dropped
        self.actions.extend(v.actions)
        return v

    def fresh_nonce(self) -> str:
        self._nonce += 1
        return f"nonce-{self._nonce}"

    def new_call(self) -> str:
        self._call += 1
        return f"call-{self._call}"

    def challenge(self, client: str, call_id: str, cseq: int, *, stale: bool = False,
                  status: int = 401) -> str:
        nonce = self.fresh_nonce()
        self.proofs.add((client, nonce))
        self.resp(client, Msg(is_request=False, method=None, status=status, call_id=call_id,
                              cseq_num=cseq, challenges=(Challenge(nonce, stale),)))
        return nonce

    def answer(self, client: str, call_id: str, cseq: int, status: int,
               expires: int | None = None) -> Verdict:
        return self.resp(client, Msg(is_request=False, method=None, status=status,
                                     call_id=call_id, cseq_num=cseq, granted_expires=expires))

    # flows ----------------------------------------------------------------
    def first_challenge(self, src: str, aor: str) -> tuple[str, int, str]:
        """REGISTER without credentials -> 401; returns (call_id, next cseq, nonce)."""
        call_id = self.new_call()
        assert self.req(src, Msg(call_id=call_id, cseq_num=1, aor=aor)).accept
        nonce = self.challenge(src, call_id, 1)
        return call_id, 2, nonce

    def attempt(self, src: str, aor: str, call_id: str, cseq: int, nonce: str, *,
                good: bool, fail_status: int = 401, expires: int | None = 3600) -> str | None:
        """REGISTER with credentials; the registrar answers 200 or a failure (a 401 carries
        a fresh nonce, returned)."""
        user = aor.split("@")[0]
        v = self.req(src, Msg(call_id=call_id, cseq_num=cseq, aor=aor,
                              authorization=Auth(user, nonce)))
        assert v.accept, v
        if good:
            self.answer(src, call_id, cseq, 200, expires)
            return None
        if fail_status == 401:
            return self.challenge(src, call_id, cseq)
        self.answer(src, call_id, cseq, fail_status)
        return None

    def login(self, src: str, aor: str, *, mistakes: int = 0) -> None:
        call_id, cseq, nonce = self.first_challenge(src, aor)
        for _ in range(mistakes):
            nonce = self.attempt(src, aor, call_id, cseq, nonce, good=False)
            cseq += 1
        self.attempt(src, aor, call_id, cseq, nonce, good=True)

    def fail_times(self, src: str, aor: str, n: int, status: int = 401) -> None:
        call_id, cseq, nonce = self.first_challenge(src, aor)
        for _ in range(n):
            fresh = self.attempt(src, aor, call_id, cseq, nonce, good=False, fail_status=status)
            nonce = fresh or nonce
            cseq += 1

    def bans(self) -> list[Ban]:
        return [a for a in self.actions if isinstance(a, Ban)]


def cfg_with(**sections: object) -> Config:
    return replace(Config(), **sections)


# ---------------------------------------------------------------- proof of failure


def test_first_challenge_is_not_a_failure() -> None:
    h = Harness()
    for i in range(50):
        h.first_challenge(ATTACKER, f"user{i}@example.com")
    assert h.bans() == []
    assert h.eng.stats()["failures"] == 0


def test_six_proven_failures_suspend_180s_then_lifted() -> None:
    h = Harness()
    h.fail_times(VICTIM, "alice@example.com", 5)
    assert h.bans() == []
    assert not h.eng.is_banned(h.now, VICTIM)
    h.fail_times(VICTIM, "alice@example.com", 1)
    assert h.bans() == [Ban(VICTIM, 180, "consecutive-failures", "suspend",
                            "alice@example.com", 6)]
    assert h.eng.is_banned(h.now, VICTIM)
    (record,) = h.eng.active_bans(h.now)
    assert (record.kind, record.until, record.failures) == ("suspend", h.now + 180, 6)
    assert h.req(VICTIM, Msg()).reason == "suspended"
    assert h.eng.is_banned(record.until - 0.1, VICTIM)
    h.now = record.until
    assert not h.eng.is_banned(h.now, VICTIM)
    assert h.eng.active_bans(h.now) == []
    assert h.req(VICTIM, Msg()).reason == "ok"
    assert len(h.bans()) == 1  # emitted exactly once


def test_403_counts_as_failure_and_401_407_too() -> None:
    h = Harness()
    h.fail_times(VICTIM, "alice@example.com", 3, status=403)
    h.fail_times(VICTIM, "alice@example.com", 2, status=401)
    call_id, cseq, nonce = h.first_challenge(VICTIM, "alice@example.com")
    h.req(VICTIM, Msg(call_id=call_id, cseq_num=cseq, authorization=Auth("alice", nonce)))
    h.challenge(VICTIM, call_id, cseq, status=407)
    assert [b.kind for b in h.bans()] == ["suspend"]


def test_six_failures_on_one_aor_is_only_a_suspension() -> None:
    h = Harness()
    h.fail_times(VICTIM, "alice@example.com", 6)
    assert [(b.kind, b.seconds) for b in h.bans()] == [("suspend", 180)]


def test_stale_401_is_not_a_failure() -> None:
    h = Harness()
    call_id, cseq, nonce = h.first_challenge(VICTIM, "alice@example.com")
    for _ in range(20):
        h.req(VICTIM, Msg(call_id=call_id, cseq_num=cseq, authorization=Auth("alice", nonce)))
        nonce = h.challenge(VICTIM, call_id, cseq, stale=True)
        cseq += 1
    assert h.bans() == []
    stats = h.eng.stats()
    assert stats["failures"] == 0 and stats["stale"] == 20


def test_other_answers_neither_count_nor_reset() -> None:
    h = Harness()
    h.fail_times(VICTIM, "alice@example.com", 5)
    call_id, cseq, nonce = h.first_challenge(VICTIM, "alice@example.com")
    for status in (500, 423, 503, 100, 180):
        h.req(VICTIM, Msg(call_id=call_id, cseq_num=cseq, authorization=Auth("alice", nonce)))
        h.answer(VICTIM, call_id, cseq, status)
        cseq += 1
    assert h.bans() == []
    assert h.eng.stats()["failures"] == 5
    h.fail_times(VICTIM, "alice@example.com", 1)  # the run was not reset: 6th failure
    assert [b.kind for b in h.bans()] == ["suspend"]


def test_retransmitted_answer_is_counted_once() -> None:
    h = Harness()
    call_id, cseq, nonce = h.first_challenge(VICTIM, "alice@example.com")
    h.req(VICTIM, Msg(call_id=call_id, cseq_num=cseq, authorization=Auth("alice", nonce)))
    for _ in range(10):
        h.answer(VICTIM, call_id, cseq, 403)
    assert h.eng.stats()["failures"] == 1


def test_success_resets_consecutive_counters() -> None:
    h = Harness()
    for _ in range(10):
        h.fail_times(VICTIM, "alice@example.com", 5)
        h.login(VICTIM, "alice@example.com")
    assert h.bans() == []


def test_consecutive_failures_across_aors_from_one_source_suspend() -> None:
    cfg = cfg_with(blacklist=BlacklistConfig(auth_failures=50))
    h = Harness(cfg)
    for aor in ("a@x", "b@x", "a@x", "b@x", "a@x"):
        h.fail_times(VICTIM, aor, 1)
    assert h.bans() == []
    h.fail_times(VICTIM, "b@x", 1)
    assert [(b.kind, b.failures) for b in h.bans()] == [("suspend", 6)]


def test_success_from_source_breaks_the_per_source_run() -> None:
    cfg = cfg_with(blacklist=BlacklistConfig(auth_failures=50))
    h = Harness(cfg)
    for i in range(30):
        h.fail_times(NAT, f"u{i}@x", 1)
        h.login(NAT, f"ok{i}@x")
    assert h.bans() == []


def test_suspension_disabled() -> None:
    h = Harness(cfg_with(suspension=SuspensionConfig(enabled=False)))
    h.fail_times(VICTIM, "alice@example.com", 30)
    assert h.bans() == []


# ---------------------------------------------------------------- spoofing


def test_spoofed_failures_without_a_valid_nonce_are_never_counted() -> None:
    h = Harness()
    for i in range(500):
        call_id = f"spoof-{i}"
        # made-up nonces, claiming VICTIM's address; the registrar rejects them
        v = h.req(VICTIM, Msg(call_id=call_id, cseq_num=1, aor=f"u{i % 7}@x",
                              authorization=Auth(f"u{i % 7}", f"made-up-{i}")))
        assert v.accept
        if i % 2:
            h.challenge(VICTIM, call_id, 1)
        else:
            h.answer(VICTIM, call_id, 1, 403)
    assert h.bans() == []
    assert not h.eng.is_banned(h.now, VICTIM)
    stats = h.eng.stats()
    assert stats["failures"] == 0 and stats["unproven"] == 500
    assert stats["table:pending"] == 0


def test_nonce_issued_to_another_source_is_not_counted() -> None:
    h = Harness()
    # the attacker obtains real nonces at its own address ...
    nonces = [h.first_challenge(ATTACKER, "alice@example.com")[2] for _ in range(20)]
    # ... and replays them with VICTIM's address as source
    for i, nonce in enumerate(nonces):
        call_id = f"replay-{i}"
        h.req(VICTIM, Msg(call_id=call_id, cseq_num=2, authorization=Auth("alice", nonce)))
        h.answer(VICTIM, call_id, 2, 403)
    assert h.bans() == []
    assert h.eng.stats()["failures"] == 0


_spoof_op = st.tuples(
    st.sampled_from(["made-up", "attacker-nonce"]),
    st.sampled_from([401, 403, 407, 200, 500]),
    st.integers(min_value=0, max_value=9),
    st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_spoof_op, min_size=1, max_size=80))
def test_property_spoofed_traffic_never_bans_the_spoofed_address(ops: list) -> None:
    """Whatever mix of forged REGISTERs claims VICTIM's address, and however the registrar
    answers them (to VICTIM, who never reads the answers), VICTIM is never banned."""
    h = Harness()
    for n, (kind, status, user, retransmit) in enumerate(ops):
        # a guessed nonce, or a real one the attacker got at its own address
        real = kind != "made-up"
        nonce = h.first_challenge(ATTACKER, f"u{user}@x")[2] if real else f"guess-{n}"
        call_id = f"forged-{n}"
        h.req(VICTIM, Msg(call_id=call_id, cseq_num=2, aor=f"u{user}@x",
                          authorization=Auth(f"u{user}", nonce)))
        for _ in range(2 if retransmit else 1):
            if status in (401, 407):
                h.challenge(VICTIM, call_id, 2, status=status)
            else:
                h.answer(VICTIM, call_id, 2, status)
    assert not h.eng.is_banned(h.now, VICTIM)
    assert not [b for b in h.bans() if b.ip == VICTIM]
    assert h.eng.stats()["failures"] == 0


def test_a_shared_nonce_is_counted_and_proves_nothing() -> None:
    h = Harness()
    # a registrar with time-only nonces challenges VICTIM and ATTACKER with the same nonce
    for client in (VICTIM, ATTACKER):
        h.resp(client, Msg(is_request=False, method=None, status=401, call_id=f"c-{client}",
                           cseq_num=1, challenges=(Challenge("same-second", False),)))
    assert h.eng.stats()["shared_nonces"] == 1
    # the attacker presents it as VICTIM: no proof token for VICTIM, so nothing counts
    for i in range(10):
        h.req(VICTIM, Msg(call_id=f"s{i}", cseq_num=2, authorization=Auth("alice", "same-second")))
        h.answer(VICTIM, f"s{i}", 2, 403)
    assert h.eng.stats()["failures"] == 0 and not h.bans()


def test_pending_request_expires() -> None:
    h = Harness(kwargs={"pending_ttl": 32.0})
    call_id, cseq, nonce = h.first_challenge(VICTIM, "alice@example.com")
    h.req(VICTIM, Msg(call_id=call_id, cseq_num=cseq, authorization=Auth("alice", nonce)))
    h.now += 33
    h.answer(VICTIM, call_id, cseq, 403)
    assert h.eng.stats()["failures"] == 0


# ---------------------------------------------------------------- blacklist


def test_five_aors_sprayed_banned_3600s() -> None:
    h = Harness()
    for i in range(4):
        h.fail_times(ATTACKER, f"user{i}@example.com", 1)
    assert h.bans() == []
    h.fail_times(ATTACKER, "user4@example.com", 1)
    assert h.bans() == [Ban(ATTACKER, 3600, "spraying", "blacklist", "user4@example.com", 5)]
    (record,) = h.eng.active_bans(h.now)
    assert (record.kind, record.level) == ("blacklist", 1)
    assert h.req(ATTACKER, Msg()).reason == "banned"
    h.now += 3600
    assert not h.eng.is_banned(h.now, ATTACKER)


def test_spraying_slower_than_the_window_is_not_banned() -> None:
    h = Harness(cfg_with(suspension=SuspensionConfig(register_retry=100)))
    for i in range(20):
        h.fail_times(ATTACKER, f"user{i}@example.com", 1)
        h.now += 151  # 4 distinct AORs per 600 s at most
    assert h.bans() == []


def test_suspended_twice_in_window_blacklisted_then_escalates_and_caps() -> None:
    h = Harness(cfg_with(blacklist=BlacklistConfig(max_ban_time=10_000)))
    aor = "alice@example.com"

    def suspend_twice() -> list[Ban]:
        start = len(h.actions)
        h.fail_times(VICTIM, aor, 6)
        h.now += 180  # first suspension lifted
        h.fail_times(VICTIM, aor, 6)  # second, 180 s later: repeat offender
        return [a for a in h.actions[start:] if isinstance(a, Ban)]

    first = suspend_twice()
    assert [(b.kind, b.seconds, b.reason) for b in first] == [
        ("suspend", 180, "consecutive-failures"), ("blacklist", 3600, "repeat-offender")]
    assert h.eng.active_bans(h.now)[0].level == 1
    h.now += 3600
    assert [(b.kind, b.seconds) for b in suspend_twice()] == [("suspend", 180),
                                                               ("blacklist", 7200)]
    h.now += 7200
    # 3600 * 4 = 14400 is over max_ban_time
    assert [(b.kind, b.seconds) for b in suspend_twice()] == [("suspend", 180),
                                                               ("blacklist", 10_000)]
    assert h.eng.active_bans(h.now)[0].level == 3


def test_escalation_decays_after_a_quiet_period() -> None:
    h = Harness()
    for i in range(5):
        h.fail_times(ATTACKER, f"u{i}@x", 1)
    h.now += 3600
    for i in range(5):
        h.fail_times(ATTACKER, f"u{i}@x", 1)
    assert [b.seconds for b in h.bans()] == [3600, 7200]
    h.now += 7200 + 86_400  # default decay: max_ban_time after the last ban ended
    for i in range(5):
        h.fail_times(ATTACKER, f"u{i}@x", 1)
    assert [b.seconds for b in h.bans()] == [3600, 7200, 3600]


def test_second_suspension_after_the_window_is_just_a_suspension() -> None:
    h = Harness()
    h.fail_times(VICTIM, "alice@example.com", 6)
    h.now += 601
    h.fail_times(VICTIM, "alice@example.com", 6)
    assert [b.kind for b in h.bans()] == ["suspend", "suspend"]


def test_one_user_mistyping_is_suspended_never_banned_for_an_hour() -> None:
    h = Harness()
    h.fail_times(VICTIM, "alice@example.com", 6)
    h.now += 180
    h.login(VICTIM, "alice@example.com", mistakes=2)
    assert [(b.kind, b.seconds) for b in h.bans()] == [("suspend", 180)]


def _pending_attempt(h: Harness, src: str, aor: str) -> tuple[str, int]:
    """A credentialed REGISTER from src that is accepted but not answered yet."""
    call_id, cseq, nonce = h.first_challenge(src, aor)
    assert h.req(src, Msg(call_id=call_id, cseq_num=cseq, aor=aor,
                          authorization=Auth(aor.split("@")[0], nonce))).accept
    return call_id, cseq


def test_late_answer_never_shortens_a_ban() -> None:
    h = Harness()
    for i in range(4):
        h.fail_times(ATTACKER, f"u{i}@x", 1)
    call_id, cseq = _pending_attempt(h, ATTACKER, "u4@x")
    h.eng.ban(h.now, ATTACKER, 10_000, "operator")
    start = len(h.actions)
    h.answer(ATTACKER, call_id, cseq, 403)  # 5th AOR: would be a 3600 s blacklist ban
    assert [a for a in h.actions[start:] if not isinstance(a, Counted)] == []
    (record,) = h.eng.active_bans(h.now)
    assert (record.kind, record.until) == ("manual", h.now + 10_000)


def test_late_answer_can_upgrade_a_suspension_to_a_blacklist_ban() -> None:
    h = Harness()
    for i in range(4):
        h.fail_times(ATTACKER, f"u{i}@x", 1)
    call_id, cseq = _pending_attempt(h, ATTACKER, "u4@x")
    h.fail_times(ATTACKER, "u0@x", 1)
    h.fail_times(ATTACKER, "u1@x", 1)  # 6 consecutive from the source: suspended
    assert [b.kind for b in h.bans()] == ["suspend"]
    h.answer(ATTACKER, call_id, cseq, 403)  # in flight before the suspension: 5 AORs
    assert [b.kind for b in h.bans()] == ["suspend", "blacklist"]
    assert h.req(ATTACKER, Msg()).reason == "banned"


# ---------------------------------------------------------------- NAT / call centre


def test_500_phones_behind_one_nat_reregister_at_once_none_suspended() -> None:
    h = Harness()
    for i in range(500):
        h.login(NAT, f"phone{i}@example.com")
    assert h.bans() == []
    assert h.eng.is_known(h.now, NAT)
    assert h.eng.stats()["successes"] == 500


def test_500_phones_interleaved_with_a_few_mistyping_once_none_suspended() -> None:
    h = Harness()
    phones = [f"phone{i}@example.com" for i in range(500)]
    mistypers = {3, 97, 250, 499}
    state = {}
    # everybody at once: 500 unauthenticated REGISTERs, then 500 challenges
    for i, aor in enumerate(phones):
        call_id = f"nat-{i}"
        assert h.req(NAT, Msg(call_id=call_id, cseq_num=1, aor=aor)).accept
        state[i] = (call_id, 2, h.challenge(NAT, call_id, 1))
    # everybody answers the challenge; a few with a wrong password
    for i, aor in enumerate(phones):
        call_id, cseq, nonce = state[i]
        fresh = h.attempt(NAT, aor, call_id, cseq, nonce, good=i not in mistypers)
        if fresh is not None:
            state[i] = (call_id, cseq + 1, fresh)
    for i in mistypers:
        call_id, cseq, nonce = state[i]
        h.attempt(NAT, phones[i], call_id, cseq, nonce, good=True)
    assert h.bans() == []
    assert h.eng.stats()["failures"] == len(mistypers)


def test_500_phones_many_mistyping_once_sequentially_none_suspended() -> None:
    h = Harness()
    for i in range(500):
        h.login(NAT, f"phone{i}@example.com", mistakes=1 if i % 10 == 0 else 0)
    assert h.bans() == []
    assert h.eng.stats()["failures"] == 50


def test_mark_known_for_twice_the_granted_expiry() -> None:
    h = Harness(step=0)
    h.login(VICTIM, "alice@example.com")
    marks = [a for a in h.actions if isinstance(a, MarkKnown)]
    assert marks == [MarkKnown(VICTIM, 7200)]
    call_id, cseq, nonce = h.first_challenge(NAT, "bob@example.com")
    h.attempt(NAT, "bob@example.com", call_id, cseq, nonce, good=True, expires=300)
    # each success also marks its (source, AOR) pair: see test_policy_pairs.py
    assert h.actions[-2] == MarkKnown(NAT, 600)
    call_id, cseq, nonce = h.first_challenge(NAT, "carol@example.com")
    h.attempt(NAT, "carol@example.com", call_id, cseq, nonce, good=True, expires=None)
    assert h.actions[-2] == MarkKnown(NAT, 7200)  # unknown: 2 x registrar.expire
    # a shorter grant never shortens what the address already holds
    h.now += 100
    call_id, cseq, nonce = h.first_challenge(NAT, "dave@example.com")
    h.attempt(NAT, "dave@example.com", call_id, cseq, nonce, good=True, expires=60)
    assert h.actions[-2] == MarkKnown(NAT, 7100)
    assert h.eng.is_known(h.now, NAT)
    h.now += 7100
    assert not h.eng.is_known(h.now, NAT)
    assert h.eng.is_known(h.now, VICTIM) is False


# ---------------------------------------------------------------- allow list


def test_allow_listed_source_never_banned_and_never_rate_limited() -> None:
    allow = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "2001:db8:1::/48")
    h = Harness(cfg_with(blacklist=BlacklistConfig(allow=allow),
                         limits=LimitsConfig(queue_budget=5)))
    for src in ("10.1.2.3", "2001:db8:1::42"):
        for _ in range(1000):
            v = h.req(src, Msg())
            assert (v.accept, v.reason) == (True, "allow")
        for i in range(10):
            h.fail_times(src, f"u{i}@x", 6)
        assert not h.eng.is_banned(h.now, src)
        with pytest.raises(ValueError):
            h.eng.ban(h.now, src, 60, "operator")
        assert h.req(src, Msg(user_agent="friendly-scanner")).reason == "allow"
    assert h.bans() == []
    assert h.eng.on_unparseable(h.now, "10.9.9.9", "bad start line").reason == "allow"


def test_reload_that_allow_lists_a_banned_source_lifts_the_ban() -> None:
    h = Harness()
    h.eng.ban(h.now, "192.0.2.7", 600, "operator")
    h.fail_times(VICTIM, "alice@example.com", 6)
    new = cfg_with(blacklist=BlacklistConfig(allow=("192.0.2.0/28",)))
    assert h.eng.reload(new) == (Unban("192.0.2.7", "allow-listed"),)
    assert h.eng.is_banned(h.now, VICTIM)  # .20 is outside /28
    assert h.req("192.0.2.7", Msg()).reason == "allow"


# ---------------------------------------------------------------- rate limits


def test_register_limit_5_per_s_burst_10() -> None:
    h = Harness(step=0)
    reasons = [h.req(VICTIM, Msg()).reason for _ in range(12)]
    assert reasons == ["ok"] * 10 + ["rate:register"] * 2
    h.now += 1.0
    reasons = [h.req(VICTIM, Msg()).reason for _ in range(6)]
    assert reasons == ["ok"] * 5 + ["rate:register"]
    assert h.eng.stats()["verdict:rate:register"] == 3


def test_sip_limit_20_per_s_burst_50_counts_every_request() -> None:
    h = Harness(step=0)
    options = Msg(method="OPTIONS", cseq_method="OPTIONS")
    # 10 REGISTERs take from both buckets, 40 OPTIONS finish the burst of 50
    assert all(h.req(VICTIM, Msg()).accept for _ in range(10))
    assert all(h.req(VICTIM, options).accept for _ in range(40))
    assert h.req(VICTIM, options).reason == "rate:sip"
    h.now += 0.5  # 10 request tokens, 2.5 REGISTER tokens
    assert [h.req(VICTIM, options).reason for _ in range(11)] == ["ok"] * 10 + ["rate:sip"]
    # another source is unaffected
    assert h.req("192.0.2.99", options).reason == "ok"


def test_register_refused_by_its_own_limit_does_not_eat_request_tokens() -> None:
    h = Harness(step=0)
    for _ in range(10):
        h.req(VICTIM, Msg())
    for _ in range(100):
        assert h.req(VICTIM, Msg()).reason == "rate:register"
    options = Msg(method="OPTIONS", cseq_method="OPTIONS")
    assert sum(h.req(VICTIM, options).accept for _ in range(50)) == 40


def test_gateway_group_shares_one_bucket_instead_of_per_source_limits() -> None:
    gw = GatewayConfig(name="trunk-a", sources=("198.18.0.0/24", "2001:db8:9::/64"), cps=30)
    h = Harness(cfg_with(gateways=(gw,)), step=0)
    srcs = ["198.18.0.1", "198.18.0.2", "2001:db8:9::5"]
    results = [h.req(srcs[i % 3], Msg()).reason for i in range(31)]
    # 30 REGISTERs pass although each member sent 10+ (over the per-source burst of 10)...
    assert results[:30] == ["ok"] * 30
    # ...and the 31st exceeds the shared group budget
    assert results[30] == "rate:gateway:trunk-a"
    h.now += 0.1
    assert [h.req("198.18.0.200", Msg()).reason for _ in range(4)] == ["ok"] * 3 + [
        "rate:gateway:trunk-a"]
    # a non-member is limited per source as usual
    assert h.req("198.18.1.1", Msg()).reason == "ok"
    assert h.eng.stats()["verdict:rate:gateway:trunk-a"] == 2


def test_gateway_burst_is_at_least_one() -> None:
    gw = GatewayConfig(name="slow", sources=("198.18.0.0/24",), cps=0.5)
    h = Harness(cfg_with(gateways=(gw,)), step=0)
    assert [h.req("198.18.0.1", Msg()).reason for _ in range(2)] == ["ok",
                                                                    "rate:gateway:slow"]
    h.now += 2.0
    assert h.req("198.18.0.1", Msg()).reason == "ok"


def test_queue_budget_for_unknown_sources_known_sources_bypass() -> None:
    h = Harness(cfg_with(limits=LimitsConfig(queue_budget=100)), step=0)
    h.login(VICTIM, "alice@example.com")  # uses 2 budget tokens (2 requests)
    assert h.eng.is_known(h.now, VICTIM)
    botnet = [f"100.64.{i // 256}.{i % 256}" for i in range(1000)]
    reasons = [h.req(src, Msg()).reason for src in botnet]
    assert reasons.count("ok") == 98
    assert reasons.count("budget") == 902
    # the budget is exhausted for strangers, a known phone still gets through
    assert h.req("100.65.0.1", Msg()).reason == "budget"
    assert h.req(VICTIM, Msg(call_id="again")).reason == "ok"
    h.now += 0.011  # one token per 10 ms at 100/s
    assert h.req("100.65.0.1", Msg()).reason == "ok"


def test_a_request_verdict_says_whether_its_source_is_known_good() -> None:
    """The guard's admission meter reads it from the verdict (one known-table read per packet),
    whatever the verdict: ok, a rate drop, a gateway drop or the budget."""
    gw = GatewayConfig(name="trunk", sources=("198.18.0.0/24",), cps=0.5)
    h = Harness(cfg_with(gateways=(gw,), limits=LimitsConfig(queue_budget=4)), step=0)
    h.login(VICTIM, "alice@example.com")  # 2 of the 4 budget tokens
    known = [h.req(VICTIM, Msg(call_id=f"k{i}")) for i in range(12)]
    assert {v.reason for v in known} == {"ok", "rate:register"}
    assert all(v.known for v in known)
    strangers = [h.req(f"100.64.0.{i}", Msg()) for i in range(3)]
    assert [v.reason for v in strangers] == ["ok", "ok", "budget"]
    assert not any(v.known for v in strangers)
    assert [v.known for v in (h.req("198.18.0.1", Msg()), h.req("198.18.0.1", Msg()))] == [
        False, False]


def test_gateway_members_bypass_the_budget() -> None:
    gw = GatewayConfig(name="trunk", sources=("198.18.0.0/24",), cps=100)
    h = Harness(cfg_with(gateways=(gw,), limits=LimitsConfig(queue_budget=5)), step=0)
    assert [h.req(f"100.64.0.{i}", Msg()).reason for i in range(6)][-1] == "budget"
    assert all(h.req("198.18.0.1", Msg()).accept for _ in range(50))


# ---------------------------------------------------------------- scanners, bans, junk


def test_scanner_user_agents_dropped_case_insensitively_without_ban() -> None:
    h = Harness()
    for ua in ("friendly-scanner", "Friendly-Scanner/1.0", "SIPVicious 0.3.4", "VAXSIPUSERAGENT",
               "my pplsip thing"):
        assert h.req(ATTACKER, Msg(user_agent=ua)).reason == "scanner"
    assert h.req(ATTACKER, Msg(user_agent=None)).reason == "ok"
    assert h.req(ATTACKER, Msg(user_agent="Linphone/5")).reason == "ok"
    assert h.bans() == [] and not h.eng.is_banned(h.now, ATTACKER)
    h2 = Harness(cfg_with(scanner=ScannerConfig(user_agents=())))
    assert h2.req(ATTACKER, Msg(user_agent="friendly-scanner")).reason == "ok"


def test_manual_ban_and_unban() -> None:
    h = Harness()
    # operator input is keyed like the guard keys IPv6 sources: per /64
    assert h.eng.ban(h.now, "2001:DB8::0:1", 59.5, "operator") == (
        Ban("2001:db8::", 60, "operator", "manual"),)
    assert h.req("2001:db8::", Msg()).reason == "banned"
    (record,) = h.eng.active_bans(h.now)
    assert (record.kind, record.reason, record.level) == ("manual", "operator", 0)
    assert h.eng.unban(h.now, "2001:db8::77") == (Unban("2001:db8::", "manual"),)
    assert h.req("2001:db8::", Msg()).reason == "ok"
    with pytest.raises(ValueError):
        h.eng.ban(h.now, "not-an-ip", 60, "x")
    with pytest.raises(ValueError):
        h.eng.ban(h.now, VICTIM, 0, "x")


def test_restore_ban_records_without_actions() -> None:
    h = Harness()
    assert h.eng.restore_ban(h.now, VICTIM, 90.5, "consecutive-failures", "suspend",
                             "alice@example.com", 6) is None
    (record,) = h.eng.active_bans(h.now)
    assert (record.ip, record.until, record.kind, record.aor, record.failures) == (
        VICTIM, h.now + 90.5, "suspend", "alice@example.com", 6)
    assert h.req(VICTIM, Msg()).reason == "suspended"
    with pytest.raises(ValueError):
        h.eng.restore_ban(h.now, "127.0.0.1", 60, "x", "manual")
    with pytest.raises(ValueError):
        h.eng.restore_ban(h.now, ATTACKER, 60, "x", "weird")
    with pytest.raises(ValueError):
        h.eng.restore_ban(h.now, ATTACKER, -1, "x", "manual")


def test_unban_forgets_offence_history() -> None:
    h = Harness()
    h.fail_times(VICTIM, "alice@example.com", 6)
    h.eng.unban(h.now, VICTIM)
    h.fail_times(VICTIM, "alice@example.com", 6)  # would be a repeat offence otherwise
    assert [b.kind for b in h.bans()] == ["suspend", "suspend"]


def test_unparseable_dropped_with_reason() -> None:
    h = Harness()
    v = h.eng.on_unparseable(h.now, ATTACKER, "no-start-line")
    assert (v.accept, v.reason) == (False, "malformed:no-start-line")
    h.eng.ban(h.now, ATTACKER, 60)
    assert h.eng.on_unparseable(h.now, ATTACKER, "x").reason == "banned"
    for i in range(200):
        assert h.eng.on_unparseable(h.now, VICTIM, f"r{i}").reason == f"malformed:r{i}"
    stats = h.eng.stats()
    assert stats["verdict:malformed:no-start-line"] == 1
    assert len([k for k in stats if k.startswith("verdict:malformed:")]) <= 65


def test_ban_table_bounded_evicts_closest_to_expiry() -> None:
    h = Harness(kwargs={"max_bans": 3})
    for i, seconds in enumerate((500, 100, 300, 400)):
        h.eng.ban(h.now, f"192.0.2.{i + 1}", seconds)
    assert [r.ip for r in h.eng.active_bans(h.now)] == ["192.0.2.3", "192.0.2.4", "192.0.2.1"]
    assert h.eng.stats()["evicted:bans"] == 1


# ---------------------------------------------------------------- state


def _busy_harness() -> Harness:
    h = Harness(step=0)
    h.fail_times(VICTIM, "alice@example.com", 6)  # suspended
    for i in range(5):
        h.fail_times(ATTACKER, f"u{i}@x", 1)  # blacklisted, level 1
    h.fail_times("192.0.2.30", "bob@example.com", 4)  # counters at 4
    h.fail_times("192.0.2.31", "carol@example.com", 1)
    h.fail_times("192.0.2.31", "dave@example.com", 1)  # spray window with 2 AORs
    h.login(NAT, "phone@example.com")  # known
    h.eng.ban(h.now, "192.0.2.99", 1000, "operator")
    h.now += 50
    return h


def test_export_restore_keeps_bans_levels_counters_and_known() -> None:
    h = _busy_harness()
    state = h.eng.export_state(h.now)
    state = json.loads(json.dumps(state))  # plain data
    later = 5_000_000.0  # another boot: another monotonic clock
    eng = Engine(Config())
    eng.restore_state(later, state)
    assert eng.export_state(later) == state
    bans = {r.ip: r for r in eng.active_bans(later)}
    assert bans[VICTIM].until == pytest.approx(later + 130)
    assert bans[ATTACKER].until == pytest.approx(later + 3550)
    assert bans[ATTACKER].level == 1 and bans[ATTACKER].kind == "blacklist"
    assert bans["192.0.2.99"].kind == "manual"
    assert eng.on_request(later, VICTIM, Msg()).reason == "suspended"
    assert eng.is_known(later, NAT)
    assert eng.known_sources(later) == [(NAT, pytest.approx(7150))]

    h2 = Harness(now=later + 10, step=0)
    h2.eng = eng
    # counters survived: two more failures suspend bob's source (4 + 2 = 6)
    h2.fail_times("192.0.2.30", "bob@example.com", 1)
    assert not eng.is_banned(h2.now, "192.0.2.30")
    h2.fail_times("192.0.2.30", "bob@example.com", 1)
    assert eng.is_banned(h2.now, "192.0.2.30")
    # escalation survived: once the ban is over, the attacker's next one is 7200 s
    h2.now = later + 3600
    for i in range(5):
        h2.fail_times(ATTACKER, f"v{i}@x", 1)
    assert [b.seconds for b in h2.bans()][-1] == 7200


def test_restore_drops_expired_and_allow_listed_entries() -> None:
    h = _busy_harness()
    state = h.eng.export_state(h.now)
    eng = Engine(cfg_with(blacklist=BlacklistConfig(allow=(f"{ATTACKER}/32",))))
    eng.restore_state(100.0, state)
    assert not eng.is_banned(100.0, ATTACKER)
    assert eng.is_banned(100.0, VICTIM)
    assert not eng.is_banned(100.0 + 131, VICTIM)
    with pytest.raises(ValueError):
        eng.restore_state(0.0, {"version": 99})


def test_reload_keeps_state_and_applies_new_limits() -> None:
    h = _busy_harness()
    before = h.eng.export_state(h.now)
    actions = h.eng.reload(cfg_with(limits=LimitsConfig(register_rate=1, register_burst=2)))
    assert actions == ()
    assert h.eng.export_state(h.now) == before
    src = "192.0.2.77"
    assert [h.req(src, Msg()).reason for _ in range(3)] == ["ok", "ok", "rate:register"]
    # new suspension settings apply to the counters already there
    h.eng.reload(cfg_with(suspension=SuspensionConfig(register_retry=5)))
    h.fail_times("192.0.2.30", "bob@example.com", 1)
    assert h.eng.is_banned(h.now, "192.0.2.30")


def test_reload_changes_gateway_membership() -> None:
    h = Harness(step=0)
    src = "198.18.0.5"
    assert [h.req(src, Msg()).reason for _ in range(11)][-1] == "rate:register"
    gw = GatewayConfig(name="trunk", sources=("198.18.0.0/24",), cps=100)
    h.eng.reload(cfg_with(gateways=(gw,)))
    assert h.req(src, Msg()).reason == "ok"  # now charged to the group bucket


# ---------------------------------------------------------------- bounded memory


def test_a_million_distinct_sources_keep_tables_at_their_cap() -> None:
    cap = 10_000
    eng = Engine(Config(), max_sources=cap, max_pending=cap)
    msg = Msg(authorization=None, user_agent=None)
    on_request = eng.on_request
    now = 1000.0
    started = time.perf_counter()
    for i in range(1_000_000):
        on_request(now, f"{10 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.1", msg)
        now += 1e-6
    elapsed = time.perf_counter() - started
    stats = eng.stats()
    assert stats["table:sources"] == cap
    assert stats["evicted:sources"] == 1_000_000 - cap
    assert elapsed < 60  # generous: the real point is the cap, not speed

    # nonce, pending, counter and blacklist tables, fed from 3 x cap proven sources (all on
    # one account: its protection is off here, or the guesses would stop reaching the tables)
    h = Harness(cfg_with(limits=LimitsConfig(queue_budget=10**9),
                         account=AccountConfig(protect=False)),
                kwargs={"max_sources": cap, "max_pending": cap}, step=0)
    for i in range(3 * cap):
        src = f"100.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"
        call_id = f"c{i}"
        h.req(src, Msg(call_id=call_id, cseq_num=1))
        nonce = h.challenge(src, call_id, 1)
        h.req(src, Msg(call_id=call_id, cseq_num=2, authorization=Auth("alice", nonce)))
        if i % 2:
            h.answer(src, call_id, 2, 403)  # a proven failure: counters and spray windows
    stats = h.eng.stats()
    for table in ("sources", "nonces", "pending", "counters_source", "counters_aor", "spray"):
        assert stats[f"table:{table}"] <= cap, table
    assert stats["table:nonces"] == cap and stats["evicted:nonces"] == 2 * cap
    assert stats["table:counters_source"] == cap and stats["evicted:counters_source"] > 0
    assert stats["evicted:pending"] > 0
    assert h.bans() == []


def test_flood_eviction_never_lifts_a_ban() -> None:
    eng = Engine(Config(), max_sources=100)
    eng.ban(0.0, VICTIM, 3600, "operator")
    msg = Msg(user_agent=None)
    for i in range(10_000):
        eng.on_request(1.0, f"100.64.{i >> 8}.{i & 255}", msg)
    assert eng.is_banned(2.0, VICTIM)
    assert eng.on_request(2.0, VICTIM, msg).reason == "banned"


def test_sweep_drops_idle_entries() -> None:
    h = Harness(step=0)
    for i in range(100):
        h.req(f"100.64.0.{i}", Msg())
    assert h.eng.stats()["table:sources"] == 100
    assert h.eng.sweep(h.now + 10) == 100
    assert h.eng.stats()["table:sources"] == 0


def test_stats_shape() -> None:
    h = Harness()
    h.req(VICTIM, Msg())
    stats = h.eng.stats()
    assert all(isinstance(v, int) for v in stats.values())
    assert stats["verdict:ok"] == 1
    assert {"table:bans", "table:known", "table:nonces", "table:pending", "failures",
            "successes", "ban:suspend", "ban:blacklist", "ban:manual"} <= set(stats)
