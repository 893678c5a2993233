"""Ban table, spraying / repeat-offender detection and escalation."""

import pytest

from floodguard.policy.escalation import BanRecord, BanTable, Blacklist, ban_length


def rec(ip: str, until: float, kind: str = "suspend") -> BanRecord:
    return BanRecord(ip, until, "test", kind)


def test_ban_table_get_expires() -> None:
    t = BanTable(cap=10)
    t.add(rec("a", 100.0), now=0.0)
    assert t.get("a", 99.9) is not None
    assert t.get("a", 100.0) is None
    assert len(t) == 0


def test_ban_table_replace_and_remove() -> None:
    t = BanTable(cap=10)
    t.add(rec("a", 100.0), 0.0)
    t.add(rec("a", 500.0, "blacklist"), 0.0)
    assert len(t) == 1
    assert t.get("a", 200.0).kind == "blacklist"
    assert t.remove("a") is not None
    assert t.get("a", 0.0) is None
    assert t.remove("a") is None


def test_ban_table_full_evicts_closest_to_expiry() -> None:
    t = BanTable(cap=3)
    t.add(rec("a", 300.0), 0.0)
    t.add(rec("b", 100.0), 0.0)
    t.add(rec("c", 200.0), 0.0)
    assert t.add(rec("d", 400.0), 0.0).ip == "b"
    assert {r.ip for r in t.active(0.0)} == {"a", "c", "d"}
    # a new ban shorter than all others is the one dropped
    assert t.add(rec("e", 50.0), 0.0).ip == "e"
    assert t.get("e", 0.0) is None
    assert t.evicted == 2
    # expired bans make room without evicting live ones
    assert t.add(rec("f", 1000.0), 250.0) is None
    assert [r.ip for r in t.active(250.0)] == ["a", "d", "f"]


def test_ban_table_heap_stays_small_under_churn() -> None:
    t = BanTable(cap=10)
    for i in range(10_000):
        t.add(rec("a", float(i)), 0.0)
        t.remove("a")
    assert len(t._heap) < 100


def test_ban_length_escalates_and_caps() -> None:
    assert [ban_length(n, 3600, 2.0, 86400) for n in range(1, 7)] == [
        3600, 7200, 14400, 28800, 57600, 86400,
    ]
    assert ban_length(10_000, 3600, 2.0, 86400) == 86400
    assert ban_length(3, 100, 1.0, 1000) == 100


def test_spray_counts_distinct_aors_in_window() -> None:
    b = Blacklist(cap=100)
    assert [b.failure(0.0, "s", a, 5, 600) for a in ("a", "b", "a", "c", "d")] == [0] * 5
    assert b.failure(1.0, "s", "e", 5, 600) == 5
    # window cleared once triggered
    assert b.failure(2.0, "s", "f", 5, 600) == 0


def test_spray_window_slides() -> None:
    b = Blacklist(cap=100)
    for i, a in enumerate("abcd"):
        b.failure(float(i), "s", a, 5, 600)
    assert b.failure(600.5, "s", "e", 5, 600) == 0  # "a" (t=0) is out of the window
    assert b.failure(600.9, "s", "f", 5, 600) == 5  # b, c, d, e, f


def test_success_takes_aor_out_of_spray_window() -> None:
    b = Blacklist(cap=100)
    for a in "abcd":
        b.failure(0.0, "s", a, 5, 600)
    b.success("s", "a")
    assert b.failure(0.0, "s", "e", 5, 600) == 0


def test_repeat_suspension_within_window() -> None:
    b = Blacklist(cap=100)
    assert not b.suspension(0.0, "s", 600)
    assert b.suspension(599.0, "s", 600)
    assert not b.suspension(700.0, "s", 600)  # history cleared when it triggered
    assert not b.suspension(1400.0, "s", 600)  # 700 s since the last one


def test_escalation_level_and_decay() -> None:
    b = Blacklist(cap=100)
    assert b.next_level(0.0, "s") == 1
    b.record_ban(0.0, "s", 1, until=3600.0, decay=86400)
    assert b.next_level(4000.0, "s") == 2
    b.record_ban(4000.0, "s", 2, until=11200.0, decay=86400)
    assert b.next_level(11200.0 + 86399, "s") == 3
    assert b.next_level(11200.0 + 86400, "s") == 1
    b.forget("s")
    assert b.next_level(0.0, "s") == 1


def test_blacklist_export_restore_round_trip() -> None:
    b = Blacklist(cap=100)
    b.failure(0.0, "s", "a", 5, 600)
    b.failure(5.0, "s", "b", 5, 600)
    b.suspension(10.0, "t", 600)
    b.record_ban(20.0, "u", 2, until=7220.0, decay=86400)
    snap = b.export(30.0)
    assert snap == {
        "spray": [["s", [["a", -30.0], ["b", -25.0]]]],
        "suspensions": [["t", -20.0]],
        "escalation": [["u", 2, 7190.0]],
    }
    c = Blacklist(cap=100)
    c.restore(1_000_000.0, snap, window=600, decay=86400)
    assert c.export(1_000_000.0) == snap
    assert c.next_level(1_000_000.0, "u") == 3
    assert c.suspension(1_000_000.0, "t", 600)


@pytest.mark.parametrize("cap", [0, -1])
def test_ban_table_cap_positive(cap: int) -> None:
    with pytest.raises(ValueError):
        BanTable(cap)
