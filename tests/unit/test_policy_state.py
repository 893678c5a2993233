"""The policy engine's state: export and restore, reload, and memory bounded under floods
of distinct sources."""

from __future__ import annotations

import json
import time

import pytest

from floodguard.config import (
    AccountConfig,
    BlacklistConfig,
    Config,
    GatewayConfig,
    LimitsConfig,
    SuspensionConfig,
)
from floodguard.policy import Engine
from tests.unit.policy_harness import ATTACKER, NAT, VICTIM, Auth, Harness, Msg, cfg_with

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
