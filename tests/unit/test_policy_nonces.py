"""Issued nonces (shared-nonce detection) and pending authenticated requests."""

from floodguard.policy.nonces import MAX_AOR_LEN, NonceTable, PendingTable


def test_a_nonce_handed_to_a_second_client_is_reported_as_shared() -> None:
    t = NonceTable(cap=100, ttl=600)
    assert not t.issue(0.0, "192.0.2.1", "abc")
    assert not t.issue(1.0, "192.0.2.1", "abc")  # the same client again: not shared
    assert t.issue(1.0, "192.0.2.2", "abc")  # Kamailio's stock nonces: one per second for all
    assert not t.issue(1.0, "192.0.2.2", "abd")
    assert t.table.peek("abc", 2.0) == "192.0.2.1"  # the first holder is kept


def test_nonce_expires() -> None:
    t = NonceTable(cap=100, ttl=600)
    t.issue(0.0, "s", "n")
    assert t.issue(599.0, "other", "n")
    assert not t.issue(600.0, "other", "n")  # expired: a fresh first holder


def test_nonce_table_is_bounded() -> None:
    t = NonceTable(cap=50, ttl=600)
    for i in range(10_000):
        t.issue(0.0, f"10.0.{i // 256}.{i % 256}", f"n{i}")
    assert len(t) == 50
    assert t.table.peek("n9999", 0.0) == "10.0.39.15"


def test_pending_take_once() -> None:
    p = PendingTable(cap=10, ttl=32)
    p.add(0.0, "s", "call", 2, "alice@example.com")
    assert p.take(1.0, "s", "call", 3) is None
    assert p.take(1.0, "other", "call", 2) is None
    assert p.take(1.0, "s", "call", 2) == "alice@example.com"
    assert p.take(1.0, "s", "call", 2) is None  # a retransmitted answer finds nothing


def test_pending_expires_and_is_bounded() -> None:
    p = PendingTable(cap=10, ttl=32)
    p.add(0.0, "s", "c", 1, "a")
    assert p.take(32.0, "s", "c", 1) is None
    for i in range(100):
        p.add(50.0, "s", f"c{i}", 1, "a")
    assert len(p) == 10
    p.add(50.0, "s", "long", 1, "x" * 10_000)
    assert p.take(50.0, "s", "long", 1) == "x" * MAX_AOR_LEN
