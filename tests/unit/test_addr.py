"""The address module: parsing, canonical forms, networks, per-prefix keys, and agreement with
the guard's own canonicalisation (policy.netset) and allow-list matching (NetSet)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from floodguard import addr
from floodguard.policy.netset import NetSet


@pytest.mark.parametrize(("text", "want"), [
    ("192.0.2.1", "192.0.2.1"),
    (" 192.0.2.1\n", "192.0.2.1"),
    ("::ffff:192.0.2.1", "192.0.2.1"),
    ("::FFFF:C000:0201", "192.0.2.1"),
    ("0:0:0:0:0:ffff:192.0.2.1", "192.0.2.1"),
    ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
    ("2001:0db8::0001", "2001:db8::1"),
    ("::1.2.3.4", "::102:304"),  # IPv4-compatible (deprecated) is not mapped: stays IPv6
    ("::", "::"),
])
def test_canonical(text: str, want: str) -> None:
    assert addr.canonical(text) == want
    assert str(addr.parse(text)) == want


@pytest.mark.parametrize("text", [
    "", " ", "1.2.3", "1.2.3.4.5", "01.2.3.4", "256.0.0.1", "1.2.3.4/32", "host.example",
    "fe80::1%eth0", "::ffff:1.2.3.4%1", "1:2:3:4:5:6:7:8:9", "1.2.3.4\x00", "x" * 10000,
])
def test_bad_addresses_raise_value_error_naming_them(text: str) -> None:
    with pytest.raises(ValueError) as info:
        addr.canonical(text)
    message = str(info.value)
    assert ("not an IP address" in message or "scoped" in message) and len(message) < 120


@pytest.mark.parametrize("value", [None, 3232235777, b"1.2.3.4", ["1.2.3.4"]])
def test_non_strings_raise_value_error(value: object) -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        addr.canonical(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "want"), [
    ("10.0.0.0/8", "10.0.0.0/8"),
    ("10.1.2.3/8", "10.0.0.0/8"),  # host bits cleared, as the config does
    ("10.0.0.1", "10.0.0.1/32"),
    ("::ffff:10.0.0.1/128", "10.0.0.1/32"),
    ("::ffff:10.0.0.1", "10.0.0.1/32"),
    ("::ffff:10.0.0.0/104", "10.0.0.0/8"),
    ("::ffff:0:0/96", "0.0.0.0/0"),
    ("::ffff:0:0/95", "::fffe:0:0/95"),  # wider than the mapped block: stays IPv6
    ("2001:DB8::/32", "2001:db8::/32"),
    ("::1/128", "::1/128"),
    ("::ffff:a00:1/128", "10.0.0.1/32"),  # how the config writes ::ffff:10.0.0.1/128
])
def test_canonical_network(text: str, want: str) -> None:
    assert addr.canonical_network(text) == want


@pytest.mark.parametrize("text", ["10.0.0.0/33", "::/129", "10.0.0.0/", "nope/8", "fe80::/10%1",
                                  ""])
def test_bad_networks_raise(text: str) -> None:
    with pytest.raises(ValueError, match="network"):
        addr.canonical_network(text)


@pytest.mark.parametrize(("ip", "prefix", "want"), [
    ("192.0.2.1", 64, "192.0.2.1"),
    ("::ffff:192.0.2.1", 64, "192.0.2.1"),
    ("2001:db8:1:2:a:b:c:d", 64, "2001:db8:1:2::"),
    ("2001:db8:1:2::", 64, "2001:db8:1:2::"),
    ("2001:DB8:1:2:ffff:ffff:ffff:ffff", 48, "2001:db8:1::"),
    ("2001:db8::1", 128, "2001:db8::1"),
    ("2001:db8::1", 0, "::"),
])
def test_source_key(ip: str, prefix: int, want: str) -> None:
    assert addr.source_key(ip, prefix) == want


def test_source_key_rejects_bad_prefix_and_address() -> None:
    with pytest.raises(ValueError, match="prefix"):
        addr.source_key("2001:db8::1", 129)
    with pytest.raises(ValueError, match="not an IP address"):
        addr.source_key("2001:db8::1/64")


@pytest.mark.parametrize(("text", "why"), [
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("::ffff:0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("127.0.0.1", "loopback"),
    ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"), ("255.255.255.255", "broadcast"),
    ("192.0.2.1", None), ("2001:db8::1", None), ("10.0.0.1", None),
])
def test_unbannable(text: str, why: str | None) -> None:
    problem = addr.unbannable(addr.parse(text))
    assert (problem is None) if why is None else (why in (problem or ""))


def test_networks_covering_is_mapped_aware_and_names_the_entry() -> None:
    nets = addr.Networks(["127.0.0.0/8", "::ffff:10.0.0.1/128", "2001:db8::/32"])
    assert nets.covering("10.0.0.1") == "::ffff:10.0.0.1/128"
    assert nets.covering("::ffff:10.0.0.1") == "::ffff:10.0.0.1/128"
    assert nets.covering("::ffff:127.1.2.3") == "127.0.0.0/8"
    assert nets.covering("2001:db8:5::1") == "2001:db8::/32"
    assert nets.covering("10.0.0.2") is None and nets.covering("2001:db9::1") is None
    with pytest.raises(ValueError):
        nets.covering("junk")
    with pytest.raises(ValueError, match="network"):
        addr.Networks(["10.0.0.0/8", "bad"])


# ---------------------------------------------------------------- properties

v4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
v6 = st.integers(0, 2**128 - 1).map(lambda n: ipaddress.IPv6Address(n))
v6_texts = v6.flatmap(lambda a: st.sampled_from([str(a), a.exploded, a.exploded.upper(),
                                                  str(a).upper()]))
mapped = st.integers(0, 2**32 - 1).flatmap(lambda n: st.sampled_from([
    f"::ffff:{ipaddress.IPv4Address(n)}", str(ipaddress.IPv6Address((0xFFFF << 32) | n)),
    ipaddress.IPv6Address((0xFFFF << 32) | n).exploded]))
addresses = st.one_of(v4, v6_texts, mapped)
junk = st.text(alphabet=st.sampled_from("0123456789abcdefABCDEF:./%x \t"), max_size=50)


def _reference(text: str) -> str:
    """What canonical text means, written the slow, obvious way."""
    address = ipaddress.ip_address(text.strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@settings(max_examples=400)
@given(addresses)
def test_canonical_agrees_with_the_guard_and_is_idempotent(text: str) -> None:
    got = addr.canonical(text)
    assert got == _reference(text)
    assert addr.canonical(got) == got
    assert addr.parse(text) == ipaddress.ip_address(got)


@settings(max_examples=1000)
@given(junk)
def test_canonical_agrees_with_the_guard_on_any_text(text: str) -> None:
    try:
        want: str | None = _reference(text)
    except ValueError:
        want = None
    try:
        got: str | None = addr.canonical(text)
    except ValueError:
        got = None
    if "%" in text or len(text.strip()) > addr.MAX_TEXT:
        assert got is None  # scoped addresses are refused here on purpose
    else:
        assert got == want


@settings(max_examples=300)
@given(addresses, st.integers(0, 128))
def test_mapped_networks_match_like_the_guard(ip: str, prefix: int) -> None:
    address = ipaddress.ip_address(ip)
    network = f"{ipaddress.ip_network((int(address), prefix), strict=False)}"
    guard = ip in NetSet([network])
    assert (addr.Networks([network]).covering(ip) is not None) == guard
    # and the canonical network, as the kernel set gets it, holds the canonical address
    canon = ipaddress.ip_network(addr.canonical_network(network))
    held = ipaddress.ip_address(addr.canonical(ip)) in canon
    assert held == guard


@given(v6, st.integers(0, 128))
def test_source_key_is_the_prefix_network(address: ipaddress.IPv6Address, prefix: int) -> None:
    if address.ipv4_mapped is not None:
        return
    key = addr.source_key(str(address), prefix)
    assert ipaddress.ip_network(f"{key}/{prefix}").supernet_of(
        ipaddress.ip_network(f"{address}/128"))
