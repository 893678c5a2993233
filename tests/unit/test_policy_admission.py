"""Admission by measured capacity: the health meter and the AIMD controller (pure)."""

from __future__ import annotations

from floodguard.policy.admission import (
    ANSWER_TIMEOUT,
    CUT,
    LATENCY_MS,
    Admission,
    Health,
    HealthMeter,
)


def _health(*, unknown: int = 0, answered: int = 0, missing: int = 0, ms: float = 1.0,
            seconds: float = 1.0) -> Health:
    meter = HealthMeter()
    for _ in range(unknown):
        meter.arrival(True)
    for i in range(answered + missing):
        meter.request(0.0, "198.51.100.1", f"c{i}", 1)
    for i in range(answered):
        meter.response(ms / 1000.0, "198.51.100.1", f"c{i}", 1)
    health = Health(seconds=seconds)
    health.add_delta(None, meter.totals(ANSWER_TIMEOUT + 1))
    return health


def test_meter_times_answers_and_counts_the_unanswered_as_missing() -> None:
    meter = HealthMeter()
    meter.arrival(True)
    meter.arrival(True)
    meter.arrival(False)
    meter.request(10.0, "a", "x", 1)
    meter.request(10.4, "a", "x", 1)  # a retransmission keeps its first time
    meter.request(10.0, "b", "y", 7)
    meter.response(10.03, "a", "x", 1)
    meter.response(10.03, "a", "x", 1)  # a second answer times nothing
    meter.response(10.03, "c", "y", 7)  # another client's answer is not b's
    early = meter.totals(10.0 + ANSWER_TIMEOUT)
    assert early["answered"] == 1 and early["missing"] == 0
    later = meter.totals(10.1 + ANSWER_TIMEOUT)
    assert later["missing"] == 1 and later["unknown"] == 2 and later["known"] == 1
    latency = later["latency"]
    assert isinstance(latency, list) and latency[LATENCY_MS.index(50)] == 1


def test_health_sums_workers_deltas_and_survives_a_restart() -> None:
    a, b = HealthMeter(), HealthMeter()
    for meter, n in ((a, 3), (b, 5)):
        for i in range(n):
            meter.arrival(True)
            meter.request(0.0, "k", str(i), 1)
            meter.response(0.001, "k", str(i), 1)
    first_a, first_b = a.totals(1.0), b.totals(1.0)
    a.arrival(True)
    a.request(1.0, "k", "more", 1)
    a.response(1.001, "k", "more", 1)
    health = Health()
    health.add_delta(first_a, a.totals(2.0))
    health.add_delta(first_b, HealthMeter().totals(2.0))  # b restarted: it counts from zero
    assert health.answered == 1 and health.unknown == 1
    assert health.p90_ms() == 1.0


def test_rate_grows_only_while_healthy_and_in_demand() -> None:
    adm = Admission(floor=50, ceiling=1000, start=100, latency_ms=200, max_missing=0.01)
    change = adm.update(_health(unknown=90, answered=100))
    # far below any cut: doubled (slow start)
    assert change is not None and change.rate == 200 and change.previous == 100
    assert adm.update(_health(unknown=10, answered=100)) is None  # no demand: hold
    adm.update(_health(unknown=200, answered=100, ms=300))  # cut at 200: 140
    assert adm.rate == 140
    change = adm.update(_health(unknown=140, answered=100))
    assert change is not None and change.rate == 168  # near the last cut: +20 %
    for _ in range(100):
        adm.update(_health(unknown=int(adm.rate), answered=100))
    assert adm.rate == 1000  # the ceiling (limits.queue_budget)


def test_rate_is_cut_when_answers_go_missing_or_slow_and_never_below_the_floor() -> None:
    adm = Admission(floor=50, ceiling=1000, start=400, latency_ms=200, max_missing=0.01)
    change = adm.update(_health(unknown=400, answered=90, missing=10, ms=60))
    assert change is not None and change.rate == int(400 * CUT)
    assert "unanswered" in change.reason
    change = adm.update(_health(unknown=400, answered=100, ms=700))
    assert change is not None and change.rate == int(400 * CUT * CUT)
    assert "p90 1000 ms" in change.reason
    for _ in range(30):
        adm.update(_health(answered=0, missing=90))  # nothing answered at all
    assert adm.rate == 50
    # too few answers to judge: the rate holds
    assert adm.update(_health(answered=5, missing=5)) is None


def test_restore_clamps_to_the_configured_range() -> None:
    adm = Admission(floor=50, ceiling=1000, start=100, latency_ms=200, max_missing=0.01)
    adm.restore({"rate": 10**9, "reason": "x"})
    assert adm.rate == 1000 and adm.export() == {"rate": 1000, "reason": "x"}
    adm.restore({"rate": "junk"})
    assert adm.rate == 1000


def test_requests_the_registrar_ignores_while_answering_fast_never_cut_the_rate() -> None:
    """An attacker who sends junk the registrar silently ignores must not get the budget cut:
    without its answers slowing down the registrar is not overloaded."""
    adm = Admission(floor=50, ceiling=1000, start=400, latency_ms=200, max_missing=0.01)
    assert adm.update(_health(unknown=100, answered=100, missing=300, ms=1)) is None
    assert adm.rate == 400


def test_the_open_table_is_bounded_and_keeps_no_long_call_ids() -> None:
    from floodguard.policy.admission import CALL_ID_KEPT, MAX_OPEN

    meter = HealthMeter()
    long_id = "x" * 5000
    meter.request(0.0, "k", long_id, 1)
    assert all(len(call_id) <= CALL_ID_KEPT for _, call_id, _ in meter.open)
    meter.response(0.01, "k", long_id, 1)
    for i in range(MAX_OPEN + 10):
        meter.request(0.0, "k", str(i), 1)
    assert len(meter.open) == MAX_OPEN
    assert meter.totals(0.1)["untimed"] == 10


def test_a_full_guard_queue_cuts_the_rate() -> None:
    """The guard itself can be the limit: packets its queue had no room for cut the rate as
    unanswered requests do (the phones' packets are lost there too)."""
    adm = Admission(floor=50, ceiling=20000, start=8000, latency_ms=200, max_missing=0.01)
    health = _health(unknown=16000, answered=100, ms=1, seconds=2.0)
    health.queue_dropped = 3000
    change = adm.update(health)
    assert change is not None and change.rate == int(8000 * CUT)
    assert "queue overflowed" in change.reason
    health = _health(unknown=16000, answered=100, ms=1, seconds=2.0)
    health.queue_dropped = 5  # a few: noise, not overload
    assert adm.update(health) is not None and adm.rate > 8000 * CUT  # grows again
