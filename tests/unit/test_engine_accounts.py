"""Account protection in the policy engine (issue #16 item 4): many sources guessing one
account protect it; only its known-good pairs reach it meanwhile; the end is reported once;
spoofed answers never count; the allow list wins; a restart keeps it; monitor-free pure logic.
The real stack is in tests/adversarial/test_distributed_guessing.py."""

from __future__ import annotations

from floodguard.config import AccountConfig, BlacklistConfig
from floodguard.policy.actions import LiftAccount, ProtectAccount
from tests.unit.policy_harness import Auth, Harness, Msg, cfg_with

ALICE = "alice@example.com"
OWNER = "192.0.2.50"
GUESSERS = [f"198.51.100.{i}" for i in range(1, 21)]


def protections(h: Harness) -> list[ProtectAccount]:
    return [a for a in h.actions if isinstance(a, ProtectAccount)]


def guess(h: Harness, src: str, aor: str = ALICE) -> None:
    h.fail_times(src, aor, 1)


def test_five_sources_guessing_one_account_protect_it_and_the_owner_keeps_registering() -> None:
    h = Harness()
    h.login(OWNER, ALICE)
    for src in GUESSERS[:4]:
        guess(h, src)
    assert protections(h) == []
    guess(h, GUESSERS[4])
    assert protections(h) == [ProtectAccount(ALICE, 180, 5, 1)]
    assert h.bans() == []  # one guess each: no source is suspended or banned
    # every other source's REGISTER for the account is dropped, any case, with or without
    # credentials; the owner's pair passes and registers
    for src in GUESSERS[5:]:
        assert h.req(src, Msg(aor=ALICE)).reason == "protected:account"
        assert h.req(src, Msg(aor="ALICE@example.com",
                              authorization=Auth("alice", "n"))).reason == "protected:account"
    assert h.req(OWNER, Msg(aor=ALICE)).reason == "ok"
    h.login(OWNER, ALICE)
    # the guessers' other accounts and other requests are untouched
    assert h.req(GUESSERS[6], Msg(aor="bob@example.com")).reason == "ok"
    assert h.req(GUESSERS[6], Msg(method="OPTIONS", aor=ALICE)).accept
    assert h.eng.stats()["verdict:protected:account"] == 2 * len(GUESSERS[5:])
    # it ends on time, reported once, and the account is open again
    h.now += 180
    assert h.eng.ended_pairs(h.now) == (LiftAccount(ALICE, "expired"),)
    assert h.eng.ended_pairs(h.now) == ()
    assert h.req(GUESSERS[7], Msg(aor=ALICE)).reason == "ok"


def test_a_second_wave_escalates() -> None:
    h = Harness()
    for src in GUESSERS[:5]:
        guess(h, src)
    h.now += 181
    h.eng.ended_pairs(h.now)
    for src in GUESSERS[5:10]:
        guess(h, src)
    assert [(p.seconds, p.level) for p in protections(h)] == [(180, 1), (360, 2)]


def test_spoofed_failures_never_count() -> None:
    """Answers to REGISTERs whose credentials carry no proof of receipt for their source (the
    guard's token) are not counted: a spoofer cannot lock the owner's account."""
    h = Harness()
    for i, src in enumerate(GUESSERS):
        call_id = f"spoof-{i}"
        h.req(src, Msg(call_id=call_id, cseq_num=2, aor=ALICE,
                       authorization=Auth("alice", "never-issued-to-this-source")))
        h.answer(src, call_id, 2, 403)
    assert protections(h) == [] and h.eng.accounts.until(h.now, ALICE) is None


def test_one_source_guessing_is_suspended_not_the_account_protected() -> None:
    h = Harness()
    h.fail_times(GUESSERS[0], ALICE, 6)
    assert protections(h) == [] and [b.ip for b in h.bans()] == [GUESSERS[0]]


def test_the_allow_list_wins_and_protection_can_be_off() -> None:
    allowed = "203.0.113.7"
    h = Harness(cfg_with(blacklist=BlacklistConfig(allow=(f"{allowed}/32",))))
    for src in GUESSERS[:5]:
        guess(h, src)
    assert protections(h)
    assert h.req(allowed, Msg(aor=ALICE)).reason == "allow"
    off = Harness(cfg_with(account=AccountConfig(protect=False)))
    for src in GUESSERS[:10]:
        guess(off, src)
    assert protections(off) == []
    assert off.req(GUESSERS[11], Msg(aor=ALICE)).reason == "ok"


def test_a_restart_keeps_the_protection_and_the_operator_can_lift_it() -> None:
    h = Harness()
    h.login(OWNER, ALICE)
    for src in GUESSERS[:5]:
        guess(h, src)
    state = h.eng.export_state(h.now)
    again = Harness()
    again.now = 50_000.0
    again.eng.restore_state(again.now - 10, state)  # restored 10 s after the snapshot
    again.eng.restore_pair(again.now, OWNER, ALICE, 3600)  # pairs come from the store
    assert again.req(GUESSERS[9], Msg(aor=ALICE)).reason == "protected:account"
    assert again.req(OWNER, Msg(aor=ALICE)).reason == "ok"
    until = again.eng.accounts.until(again.now, ALICE)
    assert until is not None and 150 < until - again.now < 180
    assert again.eng.lift_account(again.now, "Alice@Example.com") == (
        LiftAccount(ALICE, "manual"),)
    assert again.req(GUESSERS[9], Msg(aor=ALICE)).reason == "ok"
    assert again.eng.lift_account(again.now, ALICE) == ()
    # a protection persisted in the store (the guard's restore) works the same way
    third = Harness()
    third.eng.restore_account(third.now, ALICE, 100, 2)
    assert third.req(GUESSERS[0], Msg(aor=ALICE)).reason == "protected:account"
    assert third.eng.accounts.level(third.now, ALICE) == 2
