"""The bounded expiring LRU behind every per-source table."""

import pytest

from floodguard.policy.lru import LruTable


def test_get_put_and_lazy_expiry() -> None:
    t: LruTable[str, int] = LruTable(10)
    t.put("a", 1, deadline=10.0)
    assert t.get("a", 9.9) == 1
    assert t.peek("a", 9.9) == 1
    assert t.get("a", 10.0) is None  # deadline reached: gone
    assert len(t) == 0
    assert t.expired == 1


def test_cap_evicts_least_recently_used() -> None:
    t: LruTable[str, int] = LruTable(3)
    for i, k in enumerate("abc"):
        t.put(k, i, deadline=100.0)
    assert t.get("a", 0.0) == 0  # a becomes most recent
    t.put("d", 3, deadline=100.0)
    assert "b" not in t
    assert {k for k, _, _ in t.items(0.0)} == {"a", "c", "d"}
    assert t.evicted == 1
    assert len(t) == 3


def test_peek_does_not_reorder() -> None:
    t: LruTable[str, int] = LruTable(2)
    t.put("a", 1, 100.0)
    t.put("b", 2, 100.0)
    assert t.peek("a", 0.0) == 1
    t.put("c", 3, 100.0)
    assert "a" not in t and "b" in t


def test_get_refresh_extends_deadline() -> None:
    t: LruTable[str, int] = LruTable(2)
    t.put("a", 1, 10.0)
    assert t.get_refresh("a", 9.0, ttl=5.0) == 1
    assert t.deadline("a") == 14.0
    assert t.get_refresh("a", 14.0, ttl=5.0) is None
    assert t.deadline("a") is None


def test_replace_updates_value_and_deadline() -> None:
    t: LruTable[str, int] = LruTable(2)
    t.put("a", 1, 10.0)
    t.put("a", 2, 20.0)
    assert len(t) == 1
    assert t.get("a", 15.0) == 2


def test_insert_sweeps_expired_cold_end() -> None:
    t: LruTable[str, int] = LruTable(100)
    t.put("old1", 1, 5.0)
    t.put("old2", 1, 5.0)
    t.put("new", 1, 50.0, now=10.0)
    assert "old1" not in t and "old2" not in t
    assert t.expired == 2


def test_sweep_stops_at_first_live_entry_and_purge_scans_all() -> None:
    t: LruTable[str, int] = LruTable(100)
    t.put("a", 1, 5.0)
    t.put("b", 1, 50.0)
    t.put("c", 1, 5.0)
    assert t.sweep(10.0) == 1
    assert len(t) == 2
    assert t.purge(10.0) == 1
    assert [k for k, _, _ in t.items(10.0)] == ["b"]


def test_pop_and_discard() -> None:
    t: LruTable[str, int] = LruTable(4)
    t.put("a", 1, 10.0)
    t.put("b", 2, 1.0)
    assert t.pop("a", 0.0) == 1
    assert t.pop("a", 0.0) is None
    assert t.pop("b", 5.0) is None  # expired
    t.put("c", 3, 10.0)
    t.discard("c")
    t.discard("missing")
    assert len(t) == 0


def test_bounded_under_a_million_keys() -> None:
    t: LruTable[int, int] = LruTable(1000)
    for i in range(200_000):
        t.put(i, i, 1e9, 0.0)
    assert len(t) == 1000
    assert t.evicted == 199_000


def test_cap_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LruTable(0)
