"""The policy engine: phones behind one NAT, the allow list, rate limits and the budget,
scanners, manual bans and junk, with the fake registrar of policy_harness.py."""

from __future__ import annotations

import pytest

from floodguard.config import (
    BlacklistConfig,
    GatewayConfig,
    LimitsConfig,
    ScannerConfig,
)
from floodguard.policy import Ban, MarkKnown, Unban
from tests.unit.policy_harness import ATTACKER, NAT, VICTIM, Harness, Msg, cfg_with

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
