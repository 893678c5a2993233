"""The endpoint state of issue #16 shared by the fleet through a real redis-server: known-good
(source, AOR) pairs, endpoint suspensions, account protections and lockdowns travel like bans;
an operator's lift travels, an expiry does not; a node that joins later pulls them; the guard
workers are told through the command queue. Nodes are FleetLink objects stepped by the test
(fleet_kit.py). Without redis-server these tests fail (never skip)."""

from __future__ import annotations

import time

from floodguard.enforce import Enforcer
from floodguard.events import EventLog
from floodguard.store import HOLD_ACCOUNT, HOLD_LOCKDOWN

from .fleet_kit import nodes, redis_server, servers  # noqa: F401 — fixtures

NAT = "198.51.100.40"


def _guard(node) -> Enforcer:
    return Enforcer(node.store, node.sets, EventLog(node.log, True), by="guard", forget=None)


def _operator(node) -> Enforcer:
    return Enforcer(node.store, node.sets, EventLog(node.log, True), by="operator", forget=None)


def test_pairs_suspensions_and_holds_travel_and_an_operator_lift_too(tmp_path, redis_server):  # noqa: F811
    a, b = nodes(tmp_path, redis_server.url, "a", "b")
    guard = _guard(a)
    guard.known_pairs([(NAT, "1001@x", 7200), (NAT, "1002@x", 7200)])
    guard.suspend_pair(NAT, "1010@x", 180, reason="consecutive-failures", failures=6, level=2)
    guard.protect_account("1005@x", 3600, sources=5)
    guard.lockdown("203.0.113.9", 3600, failures=5)
    a.step()
    b.until(lambda: len(b.store.active_holds(HOLD_LOCKDOWN)) == 1
            and len(b.store.active_holds(HOLD_ACCOUNT)) == 1
            and len(b.store.active_pair_bans()) == 1 and len(b.store.active_known_pairs()) == 2)
    (suspended,) = b.store.active_pair_bans()
    assert (suspended.ip, suspended.aor, suspended.failures, suspended.level) == (
        NAT, "1010@x", 6, 2)
    assert suspended.reason == "fleet:a:consecutive-failures"
    assert 175 <= suspended.remaining(time.time()) <= 180
    (protected,) = b.store.active_holds(HOLD_ACCOUNT)
    assert (protected.key, protected.count) == ("1005@x", 5)
    (locked,) = b.store.active_holds(HOLD_LOCKDOWN)
    assert locked.key == "203.0.113.9"
    # a lockdown from elsewhere is the guard's here: this node never saw the phones' ports
    assert ("lockdown", "203.0.113.9") not in b.sets.entries
    assert {(aor, round(left, -2)) for ip, aor, left in b.store.active_known_pairs()
            if ip == NAT} == {("1001@x", 7200), ("1002@x", 7200)}
    commands = {(c.op, c.ip, c.reason) for c in b.store.take_commands(0)}
    assert {("pair", NAT, "1001@x"), ("pair", NAT, "1002@x"), ("suspend-pair", NAT, "1010@x"),
            ("protect", "1005@x", "1"), ("lockdown", "203.0.113.9", "1")} <= commands
    assert b.store.journal_after(0) == []  # not echoed back
    assert [e["by"] for e in b.events("suspend")] == ["fleet"]
    # the guard's own end of a suspension (it expired there) is not the fleet's business
    guard.lift_pair(NAT, "1010@x", reason="expired")
    a.step(3)
    b.step(3)
    assert len(b.store.active_pair_bans()) == 1
    # an operator's lift on a travels
    operator = _operator(a)
    guard.suspend_pair(NAT, "1010@x", 180, reason="consecutive-failures", failures=6)
    operator.lift_pair(NAT, "1010@x", reason="operator")
    operator.end_protection("1005@x", reason="operator")
    a.step()
    b.until(lambda: not b.store.active_pair_bans() and not b.store.active_holds(HOLD_ACCOUNT))
    ends = {(c.op, c.ip, c.reason) for c in b.store.take_commands(0)}
    assert {("lift-pair", NAT, "1010@x"), ("unprotect", "1005@x", None)} <= ends
    assert b.store.active_holds(HOLD_LOCKDOWN)  # untouched


def test_a_node_joining_later_pulls_the_endpoint_state(tmp_path, redis_server):  # noqa: F811
    (a,) = nodes(tmp_path, redis_server.url, "a")
    guard = _guard(a)
    guard.known_pairs([(NAT, "1001@x", 7200)])
    guard.protect_account("1005@x", 3600, sources=7, level=2)
    a.step()
    (c,) = nodes(tmp_path, redis_server.url, "c")
    assert [(ip, aor) for ip, aor, _ in c.store.active_known_pairs()] == [(NAT, "1001@x")]
    (held,) = c.store.active_holds(HOLD_ACCOUNT)
    assert (held.key, held.count, held.level) == ("1005@x", 7, 2)


def test_a_lift_older_than_a_fresh_suspension_leaves_it(tmp_path, redis_server):  # noqa: F811
    a, b = nodes(tmp_path, redis_server.url, "a", "b")
    operator = _operator(a)
    _guard(a).suspend_pair(NAT, "1010@x", 180, reason="consecutive-failures", failures=6)
    operator.lift_pair(NAT, "1010@x", reason="operator")
    a.step()
    b.until(lambda: b.link.counts["received"] >= 1)
    b.step(3)
    # b suspends the endpoint itself after a's lift: a's older lift must not end it
    _guard(b).suspend_pair(NAT, "1010@x", 180, reason="consecutive-failures", failures=6)
    b.step()
    a.until(lambda: bool(a.store.active_pair_bans()))
    b.step(3)
    assert b.store.active_pair_bans()
