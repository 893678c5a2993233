"""Per-endpoint suspension (issue #16 items 1, 2, 6): known-good (source, AOR) pairs make an
address shared-capable, and then only the failing endpoint is suspended, never its neighbours.

The pure engine with the fake registrar of policy_harness.py (time is a float moved by
hand, every counted failure carries a proof the harness handed out).
"""

from __future__ import annotations

from floodguard.config import BlacklistConfig, Config, GatewayConfig, SuspensionConfig
from floodguard.policy import Ban, Engine
from floodguard.policy.actions import LiftLockdown, LiftPair, Lockdown, MarkPair, SuspendPair
from floodguard.policy.pairs import PairBan, Pairs
from tests.unit.policy_harness import ATTACKER, NAT, Auth, Harness, Msg, cfg_with

STALE = "desk@example.com"
PHONES = [f"phone{i}@example.com" for i in range(20)]


def office(h: Harness) -> None:
    """20 phones behind NAT register successfully: NAT holds 20 known-good pairs."""
    for aor in PHONES:
        h.login(NAT, aor)


def pair_suspensions(h: Harness) -> list[SuspendPair]:
    return [a for a in h.actions if isinstance(a, SuspendPair)]


def test_stale_phone_behind_an_office_nat_suspends_only_its_own_endpoint() -> None:
    h = Harness()
    office(h)
    assert h.eng.is_shared(h.now, NAT)
    assert all(h.eng.pairs.is_known(h.now, NAT, aor) for aor in PHONES)
    h.fail_times(NAT, STALE, 5)
    assert pair_suspensions(h) == [] and h.bans() == []
    h.fail_times(NAT, STALE, 1)
    assert pair_suspensions(h) == [SuspendPair(NAT, STALE, 180, "consecutive-failures", 6, 1)]
    assert h.bans() == []  # never the address
    assert not h.eng.is_banned(h.now, NAT)
    # the stale phone's REGISTERs are dropped, with or without credentials, any case
    assert h.req(NAT, Msg(aor=STALE)).reason == "suspended:pair"
    assert not h.req(NAT, Msg(aor="DESK@example.com",
                              authorization=Auth("desk", "whatever"))).accept
    # every other AOR from that address passes and registers
    for aor in PHONES:
        assert h.req(NAT, Msg(aor=aor)).reason == "ok"
        h.login(NAT, aor)
    assert h.eng.stats()["verdict:suspended:pair"] == 2
    # only REGISTER is the endpoint's: its OPTIONS or INVITE are not judged by AOR
    assert h.req(NAT, Msg(method="OPTIONS", aor=STALE)).accept
    ban = h.eng.pairs.suspended(h.now, NAT, STALE)
    assert ban is not None and ban.failures == 6
    h.now = ban.until
    assert h.req(NAT, Msg(aor=STALE)).reason == "ok"
    assert h.eng.ended_pairs(h.now) == (LiftPair(NAT, STALE, "expired"),)
    assert h.eng.ended_pairs(h.now) == ()  # reported once


def test_a_late_answer_for_a_suspended_endpoint_counts_nothing_more() -> None:
    h = Harness()
    office(h)
    call_id, cseq, nonce = h.first_challenge(NAT, STALE)
    for _ in range(5):
        nonce = h.attempt(NAT, STALE, call_id, cseq, nonce, good=False) or nonce
        cseq += 1
    # the 6th and a 7th already in flight when the 6th answer comes back
    h.req(NAT, Msg(call_id=call_id, cseq_num=cseq, aor=STALE, authorization=Auth("desk", nonce)))
    h.req(NAT, Msg(call_id=call_id, cseq_num=cseq + 1, aor=STALE,
                   authorization=Auth("desk", nonce)))
    h.challenge(NAT, call_id, cseq)
    assert len(pair_suspensions(h)) == 1
    h.challenge(NAT, call_id, cseq + 1)
    assert len(pair_suspensions(h)) == 1
    ban = h.eng.pairs.suspended(h.now, NAT, STALE)
    assert ban is not None
    h.now = ban.until  # the late answer started no new count: 6 more are needed
    h.fail_times(NAT, STALE, 5)
    assert len(pair_suspensions(h)) == 1
    h.fail_times(NAT, STALE, 1)
    assert len(pair_suspensions(h)) == 2


def test_repeats_escalate_the_endpoint_only_never_into_an_address_ban() -> None:
    h = Harness()
    office(h)
    lengths = []
    for _ in range(5):
        h.fail_times(NAT, STALE, 6)
        ban = h.eng.pairs.suspended(h.now, NAT, STALE)
        assert ban is not None
        lengths.append(round(ban.remaining(h.now)))
        h.now = ban.until + 5  # retries soon after each suspension ends
        h.eng.ended_pairs(h.now)
        office(h)  # the phones re-register meanwhile (their pairs last 2 x expiry)
    assert lengths == [180, 360, 720, 1440, 2880]
    assert [a.level for a in pair_suspensions(h)] == [1, 2, 3, 4, 5]
    assert h.bans() == [] and not h.eng.is_banned(h.now, NAT)
    # a quiet spell longer than blacklist.window starts again from suspend_time
    h.fail_times(NAT, STALE, 6)
    ban = h.eng.pairs.suspended(h.now, NAT, STALE)
    assert ban is not None
    h.now = ban.until + 601
    office(h)
    h.fail_times(NAT, STALE, 6)
    assert pair_suspensions(h)[-1].seconds == 180


def test_a_lone_address_without_a_pair_is_still_suspended_whole() -> None:
    h = Harness()
    h.fail_times(ATTACKER, "alice@example.com", 6)
    assert h.bans() == [Ban(ATTACKER, 180, "consecutive-failures", "suspend",
                            "alice@example.com", 6)]
    assert pair_suspensions(h) == []
    assert h.req(ATTACKER, Msg(aor="anyone@example.com")).reason == "suspended"


def test_an_expired_pair_no_longer_makes_the_address_shared() -> None:
    h = Harness()
    h.login(NAT, PHONES[0])  # expires 3600: a pair for 7200 s
    assert h.eng.is_shared(h.now, NAT)
    h.now += 7201
    assert not h.eng.is_shared(h.now, NAT)
    h.fail_times(NAT, STALE, 6)
    assert [b.ip for b in h.bans()] == [NAT] and pair_suspensions(h) == []


def test_spoofed_outcomes_never_create_a_pair_nor_count_against_one() -> None:
    h = Harness()
    office(h)
    # a spoofer sends REGISTERs "from" NAT with credentials for challenges NAT never got
    # (no proof); the registrar's answers to them count for nothing
    for i in range(50):
        call_id = h.new_call()
        h.req(NAT, Msg(call_id=call_id, cseq_num=2, aor=STALE,
                       authorization=Auth("desk", f"forged-{i}")))
        h.challenge(NAT, call_id, 2)
    assert pair_suspensions(h) == [] and h.bans() == []
    assert h.eng.stats()["unproven"] == 50
    # nor can an unproven "success" make an address shared-capable
    call_id = h.new_call()
    h.req(ATTACKER, Msg(call_id=call_id, cseq_num=2, aor="alice@example.com",
                        authorization=Auth("alice", "forged")))
    h.answer(ATTACKER, call_id, 2, 200, 3600)
    assert not h.eng.is_shared(h.now, ATTACKER)
    assert not h.eng.pairs.is_known(h.now, ATTACKER, "alice@example.com")
    assert not any(isinstance(a, MarkPair) and a.ip == ATTACKER for a in h.actions)


def test_gateway_members_are_shared_capable_from_the_start() -> None:
    cfg = cfg_with(gateways=(GatewayConfig("office", (f"{NAT}/32",), 100),))
    h = Harness(cfg)
    assert h.eng.is_shared(h.now, NAT) and not h.eng.is_shared(h.now, ATTACKER)
    h.fail_times(NAT, STALE, 6)
    assert [a.aor for a in pair_suspensions(h)] == [STALE] and h.bans() == []


def test_the_allow_list_wins() -> None:
    allow = ("127.0.0.0/8", f"{NAT}/32")
    h = Harness()
    office(h)
    h.fail_times(NAT, STALE, 6)
    assert h.eng.pairs.suspended(h.now, NAT, STALE) is not None
    actions = h.eng.reload(cfg_with(blacklist=BlacklistConfig(allow=allow)))
    assert actions == (LiftPair(NAT, STALE, "allow-listed"),)
    assert h.req(NAT, Msg(aor=STALE)).reason == "allow"
    # an allow-listed source is never counted, and a stored suspension is never restored
    h.eng.restore_pair(h.now, NAT, STALE, 100, (6, 1))
    assert h.eng.pairs.suspended(h.now, NAT, STALE) is None
    assert h.eng.report(h.now, NAT, STALE, False) == ()


def test_operator_unban_lifts_the_address_endpoints() -> None:
    h = Harness()
    office(h)
    h.fail_times(NAT, STALE, 6)
    actions = h.eng.unban(h.now, NAT)
    assert LiftPair(NAT, STALE, "manual") in actions
    assert h.req(NAT, Msg(aor=STALE)).reason == "ok"


def test_tls_reports_count_per_endpoint_too() -> None:
    h = Harness()
    assert isinstance(h.eng.report(h.now, NAT, PHONES[0], True, 3600)[-1], MarkPair)
    for _ in range(5):
        assert not any(isinstance(a, SuspendPair) for a in h.eng.report(h.now, NAT, STALE,
                                                                          False))
    assert h.eng.report(h.now, NAT, "DESK@example.com", False)[-1] == SuspendPair(
        NAT, STALE, 180, "consecutive-failures", 6, 1)


def test_suspension_settings_apply_per_endpoint() -> None:
    h = Harness(cfg_with(suspension=SuspensionConfig(register_retry=3, suspend_time=30)))
    office(h)
    h.fail_times(NAT, STALE, 3)
    assert pair_suspensions(h) == [SuspendPair(NAT, STALE, 30, "consecutive-failures", 3, 1)]
    h2 = Harness(cfg_with(suspension=SuspensionConfig(enabled=False)))
    office(h2)
    h2.fail_times(NAT, STALE, 12)
    assert pair_suspensions(h2) == [] and h2.bans() == []


def test_spraying_from_a_shared_address_locks_it_down_instead_of_banning_it() -> None:
    """Issue #16 item 3: a guesser spraying AORs from an office address puts the address in
    lockdown, not in the ban set: the office's phones (its known-good pairs) keep registering,
    every other AOR from there is dropped; it ends like a ban, escalating, and the allow list
    and the operator lift it."""
    h = Harness()
    office(h)
    for i in range(5):
        h.fail_times(NAT, f"guess{i}@example.com", 1)
    assert h.bans() == []
    (lock,) = [a for a in h.actions if isinstance(a, Lockdown)]
    assert (lock.ip, lock.seconds, lock.failures, lock.level) == (NAT, 3600, 5, 1)
    assert h.req(NAT, Msg(aor="guess9@example.com")).reason == "lockdown"
    assert h.req(NAT, Msg(aor="NEWPHONE@example.com",
                          authorization=Auth("newphone", "n"))).reason == "lockdown"
    for aor in PHONES:
        assert h.req(NAT, Msg(aor=aor)).reason == "ok"
        h.login(NAT, aor)
    assert h.req(NAT, Msg(method="OPTIONS", aor="guess9@example.com")).accept
    # an address with no known-good pair is banned whole, as before
    h.fail_times(ATTACKER, "x1@example.com", 1)
    for i in range(2, 6):
        h.fail_times(ATTACKER, f"x{i}@example.com", 1)
    assert [b.ip for b in h.bans()] == [ATTACKER]
    # the end is reported once; a second spree within the decay escalates
    h.now += 3600
    assert LiftLockdown(NAT, "expired") in h.eng.ended_pairs(h.now)
    assert h.req(NAT, Msg(aor="guess9@example.com")).reason == "ok"
    for i in range(5):
        h.fail_times(NAT, f"again{i}@example.com", 1)
    assert [a.level for a in h.actions if isinstance(a, Lockdown)] == [1, 2]
    # the operator's unban ends it
    assert LiftLockdown(NAT, "manual") in h.eng.unban(h.now, NAT)
    assert h.req(NAT, Msg(aor="again9@example.com")).reason == "ok"


def test_a_lockdown_survives_a_restart_and_the_allow_list_lifts_it() -> None:
    h = Harness()
    office(h)
    for i in range(5):
        h.fail_times(NAT, f"guess{i}@example.com", 1)
    state = h.eng.export_state(h.now)
    fresh = Harness()
    fresh.eng.restore_state(fresh.now, state)
    assert fresh.req(NAT, Msg(aor="guess9@example.com")).reason == "lockdown"
    assert fresh.eng.reload(cfg_with(blacklist=BlacklistConfig(allow=(f"{NAT}/32",)))) == (
        LiftLockdown(NAT, "allow-listed"),)
    assert fresh.req(NAT, Msg(aor="guess9@example.com")).reason == "allow"


def test_snapshot_keeps_endpoint_suspensions_and_levels() -> None:
    h = Harness()
    office(h)
    h.fail_times(NAT, STALE, 6)
    state = h.eng.export_state(h.now)
    fresh = Engine(Config())
    fresh.restore_state(500.0, state)
    ban = fresh.pairs.suspended(500.0, NAT, STALE)
    assert ban is not None and round(ban.remaining(500.0)) == 180 and ban.level == 1
    # the next suspension of that endpoint escalates
    fresh.restore_pair(500.0, NAT, PHONES[0], 3600)
    assert fresh.is_shared(500.0, NAT)
    for _ in range(6):
        actions = fresh.report(700.0, NAT, STALE, False)
    assert actions[-1] == SuspendPair(NAT, STALE, 360, "consecutive-failures", 6, 2)


def test_tables_are_bounded() -> None:
    h = Harness(kwargs={"max_sources": 100, "max_bans": 50}, step=0)
    eng = h.eng
    for i in range(10_000):
        eng.report(h.now, f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", f"u{i}@x", True, 3600)
    stats = eng.stats()
    assert stats["table:pairs"] <= 100 and stats["table:pair_sources"] <= 100
    assert stats["evicted:pairs"] >= 9_900
    # 1,000 shared-capable sources each with a suspended endpoint: at most 50 are kept
    for i in range(1000):
        src = f"172.16.{i // 256}.{i % 256}"
        eng.restore_pair(h.now, src, "ok@x", 3600)
        for _ in range(6):
            eng.report(h.now, src, "bad@x", False)
    stats = eng.stats()
    assert stats["table:pair_bans"] <= 50 and stats["evicted:pair_bans"] >= 950
    assert stats["table:pair_history"] <= 100


def test_pairs_table_directly() -> None:
    pairs = Pairs(4, 2)
    assert pairs.mark(0.0, "s", "a", 100.0) == 100.0
    assert pairs.mark(0.0, "s", "a", 50.0) == 100.0  # never shortened
    assert pairs.shared(99.0, "s") and not pairs.shared(100.0, "s")
    ban = pairs.suspend(0.0, "s", "b", 6, suspend_time=10, escalation=2.0, max_time=15,
                        window=60)
    assert ban == PairBan("s", "b", 10.0, 6, 1)
    again = pairs.suspend(20.0, "s", "b", 6, suspend_time=10, escalation=2.0, max_time=15,
                          window=60)
    assert again.until == 35.0 and again.level == 2  # capped at max_time
    assert pairs.ended(34.0) == [] and pairs.ended(35.0) == [again]


def test_the_per_source_index_follows_every_change() -> None:
    pairs = Pairs(100, 3)
    kw = {"suspend_time": 10, "escalation": 2.0, "max_time": 100, "window": 60}
    pairs.suspend(0.0, "s", "a", 6, **kw)
    pairs.suspend(1.0, "s", "b", 6, **kw)
    pairs.suspend(2.0, "t", "a", 6, **kw)
    assert pairs.source_suspended("s") and pairs.source_suspended("t")
    assert not pairs.source_suspended("u")
    pairs.suspend(3.0, "u", "a", 6, **kw)  # full: the one closest to its end goes
    assert pairs.evicted == 1 and pairs.sources_suspended() == ["s", "t", "u"]
    assert [b.aor for b in pairs.lift("s")] == ["b"] and not pairs.source_suspended("s")
    assert [b.src for b in pairs.ended(12.0)] == ["t"] and not pairs.source_suspended("t")
    assert pairs.sources_suspended() == ["u"] and len(pairs) == 1
