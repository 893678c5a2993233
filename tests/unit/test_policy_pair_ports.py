"""PairPorts: the UDP (address, port) a lockdown lets through in the kernel, and when it cannot
vouch for a source's phones (then the guard alone enforces the lockdown)."""

from __future__ import annotations

from floodguard.policy.pair_ports import PairPorts

NAT = "198.51.100.40"


def test_every_live_pair_with_a_port_gives_the_pass_entries() -> None:
    ports = PairPorts()
    ports.note(NAT, "1001@x", NAT, 5062, until=100.0)
    ports.note(NAT, "1002@x", NAT, 5064, until=100.0)
    ports.note(NAT, "1003@x", NAT, 5062, until=100.0)  # two AORs on one phone: one entry
    assert ports.passes(10.0, NAT, ["1001@x", "1002@x", "1003@x"]) == [(NAT, 5062),
                                                                      (NAT, 5064)]
    # the latest answer wins: the phone's NAT mapping moved
    ports.note(NAT, "1002@x", NAT, 6000, until=120.0)
    assert ports.passes(10.0, NAT, ["1002@x"]) == [(NAT, 6000)]
    assert len(ports) == 3


def test_a_pair_without_a_current_port_sends_the_lockdown_to_the_guard() -> None:
    ports = PairPorts()
    ports.note(NAT, "1001@x", NAT, 5062, until=100.0)
    # a live pair learned elsewhere (TCP, before a restart) has no port here
    assert ports.passes(10.0, NAT, ["1001@x", "1002@x"]) is None
    # an expired port says nothing
    assert ports.passes(100.0, NAT, ["1001@x"]) is None
    # a pair that answered over TCP since is forgotten
    ports.forget(NAT, "1001@x")
    assert ports.passes(10.0, NAT, ["1001@x"]) is None and len(ports) == 0
    ports.forget(NAT, "1001@x")  # twice: nothing to do
    assert len(ports) == 0


def test_no_pair_at_all_is_never_a_kernel_lockdown() -> None:
    """A [[gateway]] is shared-capable without pairs: an empty pass set would drop all of it."""
    assert PairPorts().passes(0.0, NAT, []) is None


def test_bounded_overflow_only_forgets() -> None:
    ports = PairPorts(cap=3)
    for i in range(3):
        ports.note(f"192.0.2.{i}", "a@x", f"192.0.2.{i}", 5060, until=50.0)
    assert len(ports) == 3
    ports.note("192.0.2.9", "a@x", "192.0.2.9", 5060, until=50.0)
    assert len(ports) == 1
    assert ports.passes(0.0, "192.0.2.0", ["a@x"]) is None
    assert ports.passes(0.0, "192.0.2.9", ["a@x"]) == [("192.0.2.9", 5060)]
