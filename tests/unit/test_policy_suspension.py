"""Consecutive proven-failure counters (VOS3000 suspension)."""

from floodguard.policy.suspension import SuspensionCounters


def test_per_aor_counter_reaches_retry_then_restarts() -> None:
    c = SuspensionCounters(cap=100)
    assert [c.failure(float(i), "s", "alice", 6) for i in range(5)] == [0] * 5
    assert c.counts(5.0, "s", "alice") == (5, 5)
    assert c.failure(5.0, "s", "alice", 6) == 6
    assert c.counts(6.0, "s", "alice") == (0, 0)


def test_per_source_counter_spans_aors() -> None:
    c = SuspensionCounters(cap=100)
    results = [c.failure(0.0, "s", aor, 6) for aor in ("a", "b", "c", "a", "b")]
    assert results == [0] * 5
    assert c.failure(0.0, "s", "c", 6) == 6


def test_success_resets_aor_and_source_but_not_other_aors() -> None:
    c = SuspensionCounters(cap=100)
    for _ in range(4):
        c.failure(0.0, "s", "alice", 6)
    c.failure(0.0, "s", "bob", 6)
    c.success("s", "bob")
    assert c.counts(0.0, "s", "alice") == (4, 0)
    assert c.counts(0.0, "s", "bob") == (0, 0)
    # alice's own run goes on: two more reach 6
    assert c.failure(0.0, "s", "alice", 6) == 0
    assert c.failure(0.0, "s", "alice", 6) == 6


def test_counters_age_out() -> None:
    c = SuspensionCounters(cap=100, ttl=3600)
    for _ in range(5):
        c.failure(0.0, "s", "alice", 6)
    assert c.counts(3599.0, "s", "alice") == (5, 5)
    assert c.failure(3600.0, "s", "alice", 6) == 0
    assert c.counts(3600.0, "s", "alice") == (1, 1)


def test_counters_bounded() -> None:
    c = SuspensionCounters(cap=100)
    for i in range(5000):
        c.failure(0.0, f"s{i}", f"a{i}", 6)
    assert len(c.by_source) == 100 and len(c.by_aor) == 100


def test_export_restore_round_trip() -> None:
    c = SuspensionCounters(cap=100)
    c.failure(0.0, "s", "alice", 6)
    c.failure(10.0, "s", "bob", 6)
    snap = c.export(20.0)
    assert snap == {"source": [["s", 2, 3590.0]], "aor": [["s", "alice", 1, 3580.0],
                                                        ["s", "bob", 1, 3590.0]]}
    d = SuspensionCounters(cap=100)
    d.restore(5000.0, snap)
    assert d.export(5000.0) == snap
    assert d.counts(5000.0, "s", "bob") == (1, 2)
