"""The C fast path (floodguard.sip._scan) against the Python parsers it stands in for.

Whenever scan_sip/scan_packet answer, every field must equal what parse_message/parse_packet give
for the same bytes; when they decline (None) the guard runs the Python parsers. Checked on a
corpus of real-world shapes, on generated messages built from awkward pieces, and on random
mutations. The corpus also pins which common shapes must take the fast path, so a scan that
quietly declines everything cannot pass.
"""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from floodguard.packet import parse_packet
from floodguard.sip._scan import scan_packet, scan_sip
from floodguard.sip.message import SipParseError, parse_message
from floodguard.sip.scan_fields import packet_fields, sip_fields
from tests.unit.sip_corpus import DECLINED, FAST, REGISTER, header, sip, start, values


def agrees(data: bytes) -> bool:
    """True when the scan answered (and then it equals the parser), False when it declined."""
    view = scan_sip(data)
    if view is None:
        return False
    try:
        want = sip_fields(parse_message(data))
    except SipParseError as exc:
        raise AssertionError(
            f"scan answered for input the parser rejects ({exc}): {data!r}") from None
    assert sip_fields(view) == want, data
    return True


@pytest.mark.parametrize("name", sorted(FAST))
def test_common_shapes_take_the_fast_path_and_agree(name: str) -> None:
    assert agrees(FAST[name]), f"{name}: the scan declined a common message"


@pytest.mark.parametrize("name", sorted(DECLINED))
def test_unusual_shapes_are_left_to_the_parser(name: str) -> None:
    assert scan_sip(DECLINED[name]) is None


def test_scan_fields_of_a_register() -> None:
    view = scan_sip(REGISTER)
    assert view is not None
    assert (view.method, view.aor, view.cseq_num, view.granted_expires) == (
        "REGISTER", "1001@10.0.0.1", 2, 600)
    assert (view.authorization.username, view.authorization.nonce) == ("1001", "XyZ123")


def contacts(n: int) -> bytes:
    """A 200 with n contacts, the last one's expires the largest."""
    return sip("SIP/2.0 200 OK", "CSeq: 1 REGISTER",
               "Contact: " + ", ".join(f"<sip:c{i}@h>;expires={i}" for i in range(n)))


def contact_params(n: int) -> bytes:
    """A 200 whose one contact has n parameters before its expires."""
    return sip("SIP/2.0 200 OK", "CSeq: 1 REGISTER", "Contact: <sip:c@h>" + ";p" * n
               + ";expires=5")


def auth_items(n: int) -> bytes:
    """A REGISTER whose digest credentials have n items before the nonce."""
    items = ", ".join(f"k{i}=v" for i in range(n))
    return sip("REGISTER sip:x SIP/2.0", f"Authorization: Digest {items}, nonce=late")


@pytest.mark.parametrize(("build", "last", "field", "value"), [
    (contacts, 64, "granted_expires", 63),
    (contact_params, 62, "granted_expires", 5),
    (auth_items, 62, "nonce", "late"),
], ids=["contacts", "contact-params", "auth-items"])
def test_list_caps_match_the_parser(build, last, field, value) -> None:
    """Up to the item cap the scan answers, reads the item after the run and equals the
    parser; past it, where the parser stops reading, the scan declines."""
    at_cap = build(last)
    assert agrees(at_cap), "the scan declined a list within its cap"
    view = scan_sip(at_cap)
    got = view.authorization.nonce if field == "nonce" else view.granted_expires
    assert got == value
    assert scan_sip(build(last + 1)) is None, "the scan answered a list over its cap"
    assert scan_sip(build(70)) is None


def test_rejects_non_bytes() -> None:
    with pytest.raises(TypeError):
        scan_sip("REGISTER")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        scan_packet(bytearray(40))  # type: ignore[arg-type]


# ---------------------------------------------------------------- generated messages

@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start, st.lists(header, max_size=10))
def test_generated_messages_agree(first: str, headers: list[str]) -> None:
    agrees(sip(first, *headers))


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(sorted(FAST)), st.lists(values, min_size=1, max_size=4))
def test_common_shapes_with_awkward_values_agree(name: str, extra: list[str]) -> None:
    for value in extra:
        for field in ("To", "Contact", "Authorization", "WWW-Authenticate", "CSeq", "Expires"):
            data = FAST[name].replace(b"Call-ID:", f"{field}: {value}\r\nCall-ID:".encode(), 1)
            agrees(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(FAST)), st.data())
def test_mutated_messages_agree(name: str, data: st.DataObject) -> None:
    raw = bytearray(FAST[name])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw)))
        what = data.draw(st.sampled_from([b"\r", b"\n", b"\r\n", b'"', b",", b";", b"<", b">",
                                          b"\\", b" ", b"\t", b"=", b"\x00", b"\xff", b":",
                                          b"", b"@", b"[", b"9" * 12]))
        cut = data.draw(st.integers(0, 3))
        raw[pos:pos + cut] = what
    agrees(bytes(raw))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_and_agree(data: bytes) -> None:
    agrees(data)
    agrees(b"REGISTER sip:x SIP/2.0\r\n" + data)


# ---------------------------------------------------------------- whole packets


def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 1, 0x4000, 64, 17, 0,
                       socket.inet_aton(src), socket.inet_aton(dst))
    return head + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ipv6_l4(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, 64,
                       socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + l4


def tcp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x18, 65535, 0, 0) + payload


def packet_agrees(data: bytes) -> bool:
    fast = scan_packet(data)
    if fast is None:
        return False
    pkt = parse_packet(data)
    assert pkt is not None, data
    assert tuple(fast[:5]) == packet_fields(pkt)
    assert sip_fields(fast[5]) == sip_fields(parse_message(pkt.payload))
    return True


def test_packets_of_each_family_take_the_fast_path() -> None:
    assert packet_agrees(ipv4_udp("192.0.2.7", "10.0.0.1", 5060, 5060, REGISTER))
    assert packet_agrees(ipv4_udp("0.0.0.9", "255.255.255.255", 1, 65535, REGISTER))
    assert packet_agrees(ipv6_l4("2001:db8::7", "fd00::1", 17,
                                 struct.pack("!HHHH", 5070, 5060, 8 + len(REGISTER), 0)
                                 + REGISTER))
    assert packet_agrees(ipv6_l4("2001:db8::7", "fd00::1", 6, tcp(40000, 5060, REGISTER)))


def test_packets_the_scan_leaves_to_parse_packet() -> None:
    v4 = bytearray(ipv4_udp("192.0.2.7", "10.0.0.1", 5060, 5060, REGISTER))
    first_fragment = bytes(v4[:6]) + b"\x20\x00" + bytes(v4[8:])
    assert scan_packet(first_fragment) is None
    assert scan_packet(bytes(v4[:-1])) is None  # shorter than its total length
    assert scan_packet(ipv4_udp("192.0.2.7", "10.0.0.1", 5060, 5060, b"")) is None
    hop_by_hop = ipv6_l4("2001:db8::7", "fd00::1", 0, b"\x11\x00" + bytes(6))
    assert scan_packet(hop_by_hop) is None
    assert scan_packet(b"") is None and scan_packet(b"\x45") is None


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(sorted(FAST)), st.data())
def test_mutated_packets_agree(name: str, data: st.DataObject) -> None:
    raw = bytearray(ipv4_udp("192.0.2.7", "10.0.0.1", 5060, 5060, FAST[name]))
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, 40))
        raw[pos] = data.draw(st.integers(0, 255))
    packet_agrees(bytes(raw))
