"""CIDR membership for the allow list and gateway groups (IPv4 and IPv6)."""

import pytest

from floodguard.policy.netset import NetMap, NetSet, pack_ip


def test_ipv4_and_ipv6_membership() -> None:
    s = NetSet(["127.0.0.0/8", "::1/128", "10.1.0.0/16", "2001:db8::/32"])
    assert "127.0.0.1" in s
    assert "10.1.255.3" in s
    assert "10.2.0.1" not in s
    assert "::1" in s
    assert "::2" not in s
    assert "2001:db8:ffff::9" in s
    assert "2001:db9::1" not in s
    assert len(s) == 4 and bool(s)


def test_empty_set_matches_nothing() -> None:
    s = NetSet([])
    assert not s
    assert "1.2.3.4" not in s


def test_ipv4_mapped_ipv6_matches_ipv4_networks() -> None:
    s = NetSet(["192.0.2.0/24", "::ffff:198.51.100.0/120"])
    assert "::ffff:192.0.2.55" in s
    assert "198.51.100.9" in s


def test_not_an_address_is_never_a_member() -> None:
    s = NetSet(["0.0.0.0/0", "::/0"])
    assert "1.2.3.4" in s and "2001::1" in s
    for junk in ("", "x", "1.2.3", "1.2.3.4.5", "::g", "256.1.1.1"):
        assert junk not in s
    assert pack_ip("nope") is None


def test_longest_prefix_wins() -> None:
    m = NetMap([("10.0.0.0/8", "wide"), ("10.1.2.0/24", "narrow"), ("0.0.0.0/0", "any")])
    assert m.lookup("10.1.2.3") == "narrow"
    assert m.lookup("10.9.9.9") == "wide"
    assert m.lookup("192.0.2.1") == "any"
    assert m.lookup("2001:db8::1") is None


def test_host_bits_and_zone_ids() -> None:
    s = NetSet(["10.1.2.3/8", "fe80::/10"])
    assert "10.200.0.1" in s
    assert "fe80::1%eth0" in s


def test_none_values_refused() -> None:
    with pytest.raises(ValueError):
        NetMap([("10.0.0.0/8", None)])

