"""The policy engine: proven failures and suspension, spoofing, the blacklist and its
escalation (REFERENCE.md/DESIGN.md), with the fake registrar of policy_harness.py."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from floodguard.config import (
    BlacklistConfig,
    SuspensionConfig,
)
from floodguard.policy import Ban, Counted
from tests.unit.policy_harness import ATTACKER, NAT, VICTIM, Auth, Challenge, Harness, Msg, cfg_with

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
