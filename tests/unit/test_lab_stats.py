"""Pure arithmetic of the attack lab: percentiles, rates, the result record and the checks."""

from __future__ import annotations

import pytest

from floodguard.lab import stats
from floodguard.lab.stats import Measured, checks, percentile, rates, success_pct, summarise


def test_percentile_interpolates_and_handles_edges() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 99) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 100) == 4.0
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)


def test_success_pct_never_rounds_up_to_100() -> None:
    assert success_pct(0, 0) is None
    assert success_pct(9999, 10000) == 99.99
    assert success_pct(99999, 100000) == 99.99
    assert success_pct(5, 5) == 100.0


def test_rates_between_samples_skip_before_t0() -> None:
    samples = [{"t": 99.0, "sent": 0}, {"t": 100.0, "sent": 10}, {"t": 100.5, "sent": 60},
               {"t": 101.5, "sent": 60}]
    times, values = rates(samples, lambda s: s["sent"], 100.0)
    assert times == [0.0, 0.5, 1.5]
    assert values == [10.0, 100.0, 0.0]


def _measured(**kw: object) -> Measured:
    base = dict(scenario="botnet", protected=True, registrar="floodguard", t0=1000.0,
                t_end=1004.0)
    base.update(kw)
    return Measured(**base)  # type: ignore[arg-type]


def test_summarise_counts_layers_and_derives_guard_drops() -> None:
    samples = [
        {"t": 1000.0, "sent": 5, "kernel": {"budget": 0, "ban": 0},
         "reach": {"attackers": 0, "botnet": 0, "phones": 100},
         "udp": {"in": 100, "rcvbuf_errors": 0}},
        {"t": 1002.0, "sent": 505, "kernel": {"budget": 400, "ban": 0},
         "reach": {"attackers": 0, "botnet": 60, "phones": 150},
         "udp": {"in": 210, "rcvbuf_errors": 3}, "sets": {"floodguard-ban": 0}},
        {"t": 1004.0, "sent": 1005, "kernel": {"budget": 880, "ban": 0},
         "reach": {"attackers": 0, "botnet": 100, "phones": 200},
         "udp": {"in": 300, "rcvbuf_errors": 7}, "sets": {"floodguard-ban": 0}},
    ]
    attempts = [[1000.5, 0.002, "ok", 1], [1001.0, None, "timeout", 2],
                [1002.0, 0.004, "ok", 3], [1003.9, 0.001, "ok", 4]]
    events = [{"event": "guard_started", "ts": 990.0},
              {"event": "suspend", "ts": 1001.5, "ip": "10.202.0.10", "failures": 6},
              {"event": "ban", "ts": 1002.0, "ip": "10.202.0.10", "failures": 2},
              {"event": "suspend", "ts": 900.0, "ip": "10.202.0.99", "failures": 6}]
    r = summarise(_measured(samples=samples, attempts=attempts, events=events,
                            registrar_cpu_s=1.0, guard_rss=[(1000.0, 60.0), (1003.0, 70.5)]))
    assert r["attack_sent"] == 1000
    assert r["attack_dropped_kernel"] == 880
    assert r["attack_dropped_kernel_by_rule"] == {"budget": 880}
    assert r["attack_reached_registrar"] == 100
    assert r["attack_dropped_guard"] == 20
    assert r["attack_dropped_kernel_pct"] == 88.0
    assert (r["legit_attempted"], r["legit_succeeded"]) == (4, 3)
    assert r["legit_success_pct"] == 75.0
    assert r["legit_outcomes"] == {"ok": 3, "timeout": 1}
    assert r["latency_p50_ms"] == 2.0
    assert r["banned_sources"] == 1 and r["banned"] == ["10.202.0.10"]
    assert r["ban_failures"] == [6, 2]
    assert r["first_ban_s"] == 1.5
    assert r["registrar_cpu_pct"] == 25.0
    assert r["registrar_socket_in"] == 200 and r["registrar_socket_drops"] == 7
    assert (r["guard_rss_mb_start"], r["guard_rss_mb_max"]) == (60.0, 70.5)
    for key in stats.RESULT_KEYS:
        assert key in r
    tl = r["timeline"]
    assert tl["seconds"] == 4
    assert tl["t"] == [2.0, 4.0]
    assert tl["sent"] == [250.0, 250.0]
    assert tl["kernel"] == {"budget": [200.0, 240.0]}
    assert tl["reached"] == [30.0, 20.0]
    assert tl["guard"] == [20.0, 0.0]
    assert tl["legit_ok"] == [1, 0, 1, 1] and tl["legit_failed"] == [0, 1, 0, 0]


def test_unprotected_results_have_no_kernel_or_guard_drops() -> None:
    samples = [{"t": 999.0, "sent": 0, "reach": {"botnet": 0}},
               {"t": 1004.0, "sent": 300, "reach": {"botnet": 300}}]
    r = summarise(_measured(protected=False, samples=samples))
    assert r["attack_dropped_kernel"] == 0 and r["attack_dropped_guard"] == 0
    assert r["attack_reached_registrar"] == 300
    assert r["guard_cpu_pct"] is None
    assert r["legit_success_pct"] is None


def test_victim_binding_change_is_detected() -> None:
    before = ["sip:10001@10.201.0.11:5060"]
    same = summarise(_measured(scenario="hijack", victim_before=before,
                               victim_seen=[before, before]))
    assert same["victim_binding_changed"] is False
    moved = summarise(_measured(scenario="hijack", victim_before=before,
                                victim_seen=[before, ["sip:10001@10.202.0.12:5085"]]))
    assert moved["victim_binding_changed"] is True
    assert summarise(_measured())["victim_binding_changed"] is None


def _result(scenario: str, protected: bool = True, **kw: object) -> dict:
    r = {"scenario": scenario, "protected": protected, "legit_attempted": 100,
         "legit_succeeded": 100, "legit_success_pct": 100.0, "attack_sent": 1000,
         "attack_dropped_kernel_pct": 99.0, "guard_rss_mb_start": 60.0,
         "guard_rss_mb_max": 70.0, "ban_failures": [6], "banned_sources": 1,
         "victim_binding_changed": False, "registrar_socket_drops": 10,
         "attack": {"guesser": {"cracked": False, "blocked_after_failures": 6},
                    "hijack": {"hijack_200": 0}}}
    r.update(kw)
    return r


def test_checks_pass_and_fail_on_the_issue_criteria() -> None:
    good = [_result("botnet"), _result("botnet", False, legit_success_pct=40.0),
            _result("bruteforce"), _result("hijack"), _result("storm")]
    assert all(c.passed for c in checks(good))
    names = {(c.scenario, c.protected, c.name) for c in checks(good)}
    assert ("botnet", False, "unprotected registrar overwhelmed (success <= 80%)") in names
    bad = [
        _result("botnet", attack_dropped_kernel_pct=90.0),
        _result("botnet", guard_rss_mb_max=500.0),
        _result("storm", legit_succeeded=99, legit_success_pct=99.0),
        _result("volume", legit_success_pct=99.8),
        _result("bruteforce", ban_failures=[7]),
        _result("bruteforce", attack={"guesser": {"cracked": True}}),
        _result("hijack", victim_binding_changed=True),
        _result("botnet", False, legit_success_pct=95.0),
    ]
    failed = [c for c in checks(bad) if not c.passed]
    assert {(c.scenario, c.name.split(" ")[0]) for c in failed} == {
        ("botnet", ">="), ("botnet", "guard"), ("storm", "legitimate"),
        ("volume", "legitimate"), ("bruteforce", "guesser"), ("hijack", "victim's"),
        ("botnet", "unprotected")}


def test_guard_drops_come_from_the_guards_own_counters_when_published() -> None:
    samples = [{"t": 1000.0, "sent": 0, "kernel": {"budget": 0}, "reach": {"botnet": 0}},
               {"t": 1004.0, "sent": 100, "kernel": {"budget": 80}, "reach": {"botnet": 15}}]
    derived = summarise(_measured(samples=samples))
    assert derived["attack_dropped_guard"] == 5 and derived["attack_unaccounted"] == 5
    counted = summarise(_measured(samples=samples, guard_verdicts={
        "drop:budget": 3, "drop:malformed:bad_header": 1, "pass:ok": 50, "drop:scanner": 0}))
    assert counted["attack_dropped_guard"] == 4
    assert counted["attack_dropped_guard_by_reason"] == {"budget": 3, "malformed:bad_header": 1}
    assert counted["attack_unaccounted"] == 5


def test_fresh_start_must_complete_within_sixty_seconds() -> None:
    def fresh(done: float | None) -> dict:
        return _result("fresh-start", fresh_start={"phones": 2000, "registered": 2000 if done
                                                   else 1500, "completed_s": done})

    def verdict(r: dict) -> bool:
        return next(c.passed for c in checks([r]) if c.name.startswith("fresh start"))

    assert verdict(fresh(42.0))
    assert not verdict(fresh(61.0))
    assert not verdict(fresh(None))
    assert summarise(_measured(fresh={"phones": 1}))["fresh_start"] == {"phones": 1}


def test_kernel_drops_survive_the_rules_being_replaced() -> None:
    # the budget rule is replaced mid-run (a new rate): its counter starts again from 0
    samples = [{"t": 1000.0, "sent": 0, "kernel": {"budget": 10}, "reach": {}},
               {"t": 1001.0, "sent": 600, "kernel": {"budget": 510}, "reach": {}},
               {"t": 1002.0, "sent": 1200, "kernel": {"budget": 200}, "reach": {}},
               {"t": 1003.0, "sent": 1800, "kernel": {"budget": 700}, "reach": {}}]
    r = summarise(_measured(samples=samples))
    assert r["attack_dropped_kernel_by_rule"] == {"budget": 500 + 200 + 500}
