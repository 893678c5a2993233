"""Tests for the raw IP/UDP/TCP parser (floodguard.packet), cross-checked against scapy."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.packet import Packet as ScapyPacket

from floodguard.packet import ACK, FIN, PSH, RST, SYN, Packet, parse_packet

SIP = b"REGISTER sip:example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n"


def agrees_with_scapy(raw: bytes, scapy_pkt: ScapyPacket) -> Packet:
    """parse_packet(raw) must see what scapy sees in the same bytes."""
    parsed = parse_packet(raw)
    assert parsed is not None
    view = scapy_pkt.__class__(raw)
    ip = view[IP] if IP in view else view[IPv6]
    layer = view[UDP] if UDP in view else view[TCP]
    assert parsed.family == (4 if IP in view else 6)
    assert parsed.src == ip.src
    assert parsed.dst == ip.dst
    assert parsed.proto == ("udp" if UDP in view else "tcp")
    assert parsed.sport == layer.sport
    assert parsed.dport == layer.dport
    assert parsed.payload == bytes(layer.payload)
    assert parsed.tcp_flags == (int(layer.flags) & 0xFF if TCP in view else 0)
    return parsed


# --- IPv4 ------------------------------------------------------------------------------------


def test_ipv4_udp() -> None:
    pkt = IP(src="192.0.2.10", dst="198.51.100.1") / UDP(sport=5062, dport=5060) / SIP
    parsed = agrees_with_scapy(bytes(pkt), pkt)
    assert parsed == Packet(4, "192.0.2.10", "198.51.100.1", "udp", 5062, 5060, SIP, 0)


def test_ipv4_tcp_with_options_and_flags() -> None:
    pkt = (
        IP(src="192.0.2.10", dst="198.51.100.1")
        / TCP(sport=40000, dport=5060, flags="PA", options=[("MSS", 1460), ("NOP", None),
                                                             ("WScale", 7)])
        / SIP
    )
    parsed = agrees_with_scapy(bytes(pkt), pkt)
    assert parsed.payload == SIP
    assert parsed.tcp_flags == PSH | ACK


@pytest.mark.parametrize(("flags", "bits"), [("S", SYN), ("SA", SYN | ACK), ("F", FIN),
                                             ("R", RST)])
def test_ipv4_tcp_without_payload(flags: str, bits: int) -> None:
    pkt = IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=1, dport=5060, flags=flags)
    parsed = agrees_with_scapy(bytes(pkt), pkt)
    assert parsed.payload == b""
    assert parsed.tcp_flags == bits


def test_ipv4_header_options() -> None:
    pkt = IP(src="192.0.2.1", dst="192.0.2.2", options=[IPOption_RR()]) / UDP(dport=5060) / SIP
    raw = bytes(pkt)
    assert raw[0] & 0x0F > 5
    agrees_with_scapy(raw, pkt)


def test_ipv4_link_layer_padding_is_ignored() -> None:
    pkt = IP(src="192.0.2.1", dst="192.0.2.2") / UDP(dport=5060) / b"hi"
    parsed = parse_packet(bytes(pkt) + b"\x00" * 20)
    assert parsed is not None and parsed.payload == b"hi"


def test_ipv4_first_fragment_parses_later_fragments_do_not() -> None:
    first = IP(src="192.0.2.1", dst="192.0.2.2", flags="MF", frag=0) / UDP(dport=5060) / SIP
    agrees_with_scapy(bytes(first), first)
    later = IP(src="192.0.2.1", dst="192.0.2.2", frag=10, proto=17) / (b"x" * 40)
    assert parse_packet(bytes(later)) is None


def test_ipv4_other_protocols_are_ignored() -> None:
    assert parse_packet(bytes(IP(dst="192.0.2.2") / ICMP())) is None


@pytest.mark.parametrize("cut", [0, 1, 10, 19, 20, 27])
def test_ipv4_truncated(cut: int) -> None:
    raw = bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(dport=5060) / SIP)
    assert parse_packet(raw[:cut]) is None
    # Cutting into the payload contradicts the IP total length.
    assert parse_packet(raw[:-1]) is None


def test_ipv4_inconsistent_lengths() -> None:
    raw = bytearray(bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(dport=5060) / SIP))
    bad_ihl = bytearray(raw)
    bad_ihl[0] = 0x44  # IHL 4 words < 20 bytes
    assert parse_packet(bytes(bad_ihl)) is None
    short_total = bytearray(raw)
    short_total[2:4] = (12).to_bytes(2, "big")
    assert parse_packet(bytes(short_total)) is None
    udp_too_long = bytearray(raw)
    udp_too_long[24:26] = (len(raw)).to_bytes(2, "big")
    assert parse_packet(bytes(udp_too_long)) is None
    udp_too_short = bytearray(raw)
    udp_too_short[24:26] = (7).to_bytes(2, "big")
    assert parse_packet(bytes(udp_too_short)) is None


def test_tcp_bad_data_offset() -> None:
    raw = bytearray(bytes(IP(src="192.0.2.1", dst="192.0.2.2") / TCP(dport=5060)))
    raw[32] = 0x40  # 4 words < 20 bytes
    assert parse_packet(bytes(raw)) is None
    raw[32] = 0xF0  # 60 bytes > what is there
    assert parse_packet(bytes(raw)) is None


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x50" + b"\x00" * 60, b"\x60" * 39])
def test_garbage(data: bytes) -> None:
    assert parse_packet(data) is None


def test_accepts_bytearray_and_memoryview() -> None:
    raw = bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(dport=5060) / SIP)
    assert parse_packet(bytearray(raw)) == parse_packet(raw)
    assert parse_packet(memoryview(raw)) == parse_packet(raw)


# --- IPv6 ------------------------------------------------------------------------------------


def test_ipv6_udp() -> None:
    pkt = IPv6(src="2001:db8::10", dst="2001:db8::1") / UDP(sport=5060, dport=5060) / SIP
    parsed = agrees_with_scapy(bytes(pkt), pkt)
    assert parsed.family == 6 and parsed.src == "2001:db8::10"


def test_ipv6_tcp() -> None:
    pkt = IPv6(src="2001:db8::10", dst="2001:db8::1") / TCP(sport=5061, dport=5060,
                                                           flags="A") / SIP
    assert agrees_with_scapy(bytes(pkt), pkt).tcp_flags == ACK


def test_ipv6_mapped_and_compressed_addresses() -> None:
    pkt = IPv6(src="::ffff:192.0.2.1", dst="::1") / UDP(dport=5060) / b"x"
    parsed = agrees_with_scapy(bytes(pkt), pkt)
    assert parsed.src == "::ffff:192.0.2.1" and parsed.dst == "::1"


def test_ipv6_extension_headers() -> None:
    pkt = (
        IPv6(src="2001:db8::10", dst="2001:db8::1")
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / IPv6ExtHdrRouting(addresses=["2001:db8::99"])
        / IPv6ExtHdrFragment(offset=0, m=0, id=7)
        / IPv6ExtHdrDestOpt()
        / UDP(sport=5060, dport=5060)
        / SIP
    )
    assert agrees_with_scapy(bytes(pkt), pkt).payload == SIP


def test_ipv6_non_first_fragment_is_ignored() -> None:
    pkt = IPv6(src="2001:db8::10", dst="2001:db8::1") / IPv6ExtHdrFragment(offset=5, nh=17) / (
        b"x" * 40
    )
    assert parse_packet(bytes(pkt)) is None


def test_ipv6_too_many_extension_headers() -> None:
    pkt: ScapyPacket = IPv6(src="2001:db8::10", dst="2001:db8::1")
    for _ in range(9):
        pkt = pkt / IPv6ExtHdrDestOpt()
    pkt = pkt / UDP(dport=5060) / SIP
    assert parse_packet(bytes(pkt)) is None


def test_ipv6_other_protocols_and_truncation() -> None:
    assert parse_packet(bytes(IPv6(dst="2001:db8::1") / ICMPv6EchoRequest())) is None
    raw = bytes(IPv6(src="2001:db8::10", dst="2001:db8::1") / UDP(dport=5060) / SIP)
    assert parse_packet(raw[:-1]) is None
    assert parse_packet(raw[:40]) is None
    jumbo = bytearray(raw)
    jumbo[4:6] = b"\x00\x00"
    assert parse_packet(bytes(jumbo)) is None
    ext_cut = bytes(IPv6(dst="2001:db8::1", plen=4) / IPv6ExtHdrHopByHop())[:44]
    assert parse_packet(ext_cut) is None


# --- never raises ------------------------------------------------------------------------------

SEEDS = [
    bytes(IP(src="192.0.2.1", dst="192.0.2.2") / UDP(dport=5060) / SIP),
    bytes(IP(src="192.0.2.1", dst="192.0.2.2", options=[IPOption_RR()]) / TCP(dport=5060) / SIP),
    bytes(IPv6(dst="2001:db8::1") / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment() / UDP() / SIP),
    bytes(IPv6(dst="2001:db8::1") / IPv6ExtHdrRouting() / TCP(flags="S")),
]


@st.composite
def mutated_packets(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data) - 1)) if data else 0
        kind = draw(st.sampled_from(["flip", "byte", "truncate"]))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and data:
            data[pos] = draw(st.integers(0, 255))
        else:
            del data[pos:]
    return bytes(data)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.binary(max_size=200), mutated_packets()))
def test_never_raises(data: bytes) -> None:
    parsed = parse_packet(data)
    if parsed is not None:
        assert parsed.family in (4, 6)
        assert parsed.proto in ("udp", "tcp")
        assert 0 <= parsed.sport <= 0xFFFF and 0 <= parsed.dport <= 0xFFFF
        assert len(parsed.payload) <= len(data)


@settings(max_examples=500)
@given(st.binary(max_size=1600))
def test_checksum_equals_the_word_by_word_sum(data: bytes) -> None:
    from floodguard.packet import _checksum

    padded = data + b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(padded) // 2}H", padded))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert _checksum(data) == ~total & 0xFFFF
