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


def sip(*lines: str, body: str = "") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


REGISTER = sip(
    "REGISTER sip:10.0.0.1 SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1;rport",
    "Max-Forwards: 70",
    'From: "1001" <sip:1001@10.0.0.1>;tag=a1',
    'To: "1001" <sip:1001@10.0.0.1>',
    "Call-ID: 5e1f@192.0.2.7",
    "CSeq: 2 REGISTER",
    "Contact: <sip:1001@192.0.2.7:5060;transport=udp>;expires=600",
    "Expires: 600",
    "User-Agent: Yealink SIP-T46S 66.85.0.5",
    'Authorization: Digest username="1001", realm="10.0.0.1", nonce="XyZ123", '
    'uri="sip:10.0.0.1", response="0123456789abcdef0123456789abcdef", algorithm=MD5, '
    'cnonce="ab12", qop=auth, nc=00000001',
    "Content-Length: 0",
)

# Shapes the fast path must answer (then equal to the Python parser).
FAST = {
    "yealink register": REGISTER,
    "first register": sip(
        "REGISTER sip:pbx.example.com SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.4:5062;branch=z9hG4bK-524287-1---abc;rport",
        "To: <sip:201@PBX.Example.com:5060>",
        "From: <sip:201@pbx.example.com>;tag=77",
        "Call-ID: 8a3c-Zoiper",
        "CSeq: 1 REGISTER",
        'Contact: <sip:201@198.51.100.4:5062;rinstance=6a1;transport=UDP>;'
        '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1;expires=60',
        "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE",
        "User-Agent: Z 5.6.1 v2.10.19.9",
        "Allow-Events: presence, kpml, talk",
        "Content-Length: 0",
    ),
    "kamailio 401": sip(
        "SIP/2.0 401 Unauthorized",
        "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1;rport=5060;received=192.0.2.7",
        'From: "1001" <sip:1001@10.0.0.1>;tag=a1',
        'To: "1001" <sip:1001@10.0.0.1>;tag=b27e1a1d33761e85846fc98f5f3a7e58.3fa1',
        "Call-ID: 5e1f@192.0.2.7",
        "CSeq: 1 REGISTER",
        'WWW-Authenticate: Digest realm="10.0.0.1", nonce="ZHk3YmM1ZGUzZjE=", qop="auth"',
        "Server: kamailio (5.6.3 (x86_64/linux))",
        "Content-Length: 0",
    ),
    "stale 401 with two challenges": sip(
        "SIP/2.0 401 Unauthorized",
        "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK2",
        "To: <sip:1001@10.0.0.1>;tag=x",
        "Call-ID: c2",
        "CSeq: 3 REGISTER",
        'WWW-Authenticate: Digest realm="r", nonce="n-sha", algorithm=SHA-256, stale=TRUE, '
        'Digest realm="r", nonce="n-md5", algorithm=MD5, stale=true',
        "Content-Length: 0",
    ),
    "200 with two contacts": sip(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK3",
        "Via: SIP/2.0/UDP 10.9.9.9;branch=z9hG4bK4",
        "To: <sip:1001@10.0.0.1>;tag=y",
        "Call-ID: c3",
        "CSeq: 4 REGISTER",
        'Contact: <sip:1001@192.0.2.7:5060>;expires=120, "desk, 2" <sip:1001@192.0.2.8>'
        ';expires=3600;q=0.5',
        "Expires: 60",
        "Content-Length: 0",
    ),
    "200 with expires header only": sip(
        "SIP/2.0 200 OK", "To: sip:1001@[2001:DB8::1]:5060", "Call-ID: c4",
        "CSeq: 5 REGISTER", "Contact: <sip:1001@h>", "Expires:  1800 ", "Content-Length: 0",
    ),
    "407 proxy challenge": sip(
        "SIP/2.0 407 Proxy Authentication Required", "To: <tel:+15551234>", "Call-ID: c5",
        "CSeq: 1 INVITE", 'Proxy-Authenticate: Digest realm="p", nonce="pn", opaque=""',
        "Content-Length: 0",
    ),
    "invite with body": sip(
        "INVITE sip:1002@10.0.0.1 SIP/2.0", "To: <sip:1002@10.0.0.1>", "Call-ID: c6",
        "CSeq: 10 INVITE", "Content-Type: application/sdp", "Content-Length: 10",
        body="v=0\r\no=x\r\n",
    ),
    "options keepalive": sip("OPTIONS sip:10.0.0.1 SIP/2.0", "Call-ID: k", "CSeq: 1 OPTIONS"),
    "scanner": sip(
        "REGISTER sip:10.0.0.1 SIP/2.0", "To: <sip:100@10.0.0.1>", "Call-ID: s",
        "CSeq: 1 REGISTER", "User-Agent: friendly-scanner", "Content-Length: 0",
    ),
    "proxy authorization and basic": sip(
        "REGISTER sip:x SIP/2.0", "To: <sip:a@x>", "Call-ID: p", "CSeq: 1 REGISTER",
        "Authorization: Basic QWxhZGRpbjpvcGVu",
        'Proxy-Authorization: Digest username="a", nonce="pn2", realm="x"',
    ),
    "basic only": sip("REGISTER sip:x SIP/2.0", "To: <sip:a@x>", "Authorization: Basic abc"),
    "lower-case names and odd spacing": sip(
        "register sip:x SIP/2.0", "to:   Bob <sip:Bob@X.ORG>  ", "call-id:\tc7 ",
        "cseq:  7   register", "contact: <sip:b@h>;EXPIRES=\"45\"", "user-agent: UA",
    ),
    "utf-8 display name and agent": (
        "REGISTER sip:x SIP/2.0\r\nFrom: \"Zoë\" <sip:z@x>\r\nUser-Agent: Zoë phone\r\n"
        "Call-ID: ü\r\nCSeq: 1 REGISTER\r\n\r\n").encode(),
    "invalid utf-8 user agent": b"REGISTER sip:x SIP/2.0\r\nUser-Agent: \xff\xfe bad\r\n\r\n",
    # separators inside quotes and <...>: where the parser's splits differ
    "comma and expires in a display name": sip(
        "SIP/2.0 200 OK", "CSeq: 1 REGISTER", 'Contact: "a,b;expires=5" <sip:x@y>;expires=7'),
    "bracket in a parameter": sip(
        "SIP/2.0 200 OK", "CSeq: 1 REGISTER", "Contact: <sip:x@y>;a=<b;expires=9>;expires=7"),
    "quoted parameter": sip(
        "SIP/2.0 200 OK", "CSeq: 1 REGISTER", 'Contact: <sip:x@y>;p="q;expires=3";expires=8'),
    "token display name": sip(
        "REGISTER sip:x SIP/2.0", "To: Bob Smith <sip:BOB@Host;user=phone>", "Call-ID: c"),
    "semicolon before a bracket": sip(
        "REGISTER sip:x SIP/2.0", "To: sip:a@b;x=<sip:u@h>", "Call-ID: c"),
    "unbracketed to with params": sip(
        "REGISTER sip:x SIP/2.0", "To: sip:u:pw@H.example:5061;tag=9", "Call-ID: c"),
    "auth items with spaces and commas": sip(
        "REGISTER sip:x SIP/2.0",
        'Authorization: Digest username = "u" ,nonce= n1 ,, realm="r",Digest nonce="n2"'),
    "auth value with an equals sign": sip(
        "SIP/2.0 401 Unauthorized", "CSeq: 1 REGISTER",
        'WWW-Authenticate: Digest nonce=a=b, stale=false, Basic realm="x"'),
}

# Shapes the fast path leaves to the Python parser (valid or not).
DECLINED = {
    "compact forms": sip("REGISTER sip:x SIP/2.0", "i: c", "t: <sip:a@x>", "l: 0"),
    "folded": sip("REGISTER sip:x SIP/2.0", "Subject: a", " b"),
    "bare lf": b"REGISTER sip:x SIP/2.0\nCall-ID: c\n\n",
    "leading crlf": b"\r\n" + REGISTER,
    "two authorization headers": sip(
        "REGISTER sip:x SIP/2.0", 'Authorization: Digest nonce="a"',
        'Authorization: Digest nonce="b"'),
    "escaped quote": sip("REGISTER sip:x SIP/2.0", 'Authorization: Digest nonce="a\\"b"'),
    "non-ascii to": sip("REGISTER sip:x SIP/2.0", "To: <sip:zoë@x>"),
    "lower-case version": sip("SIP/2.0 200 OK".lower(), "Call-ID: c"),
    "bad cseq": sip("REGISTER sip:x SIP/2.0", "CSeq: x REGISTER"),
    "truncated body": sip("INVITE sip:x SIP/2.0", "Content-Length: 50", body="abc"),
    "no end of headers": b"REGISTER sip:x SIP/2.0\r\nCall-ID: c\r\n",
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "empty value": sip("REGISTER sip:x SIP/2.0", "Call-ID:"),
    "space in name": sip("REGISTER sip:x SIP/2.0", "Call-ID : c"),
    "nul byte": sip("REGISTER sip:x SIP/2.0", "Call-ID: c\x00d"),
}


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

PIECES = [
    "sip:", "SIP:", "sips:", "tel:", "@", "[", "]", "<", ">", '"', ";", ",", "=", ":", " ",
    "\t", "a", "B", "1", "expires", "EXPIRES", "nonce", "stale", "true", "Digest", "digest",
    "username", "tag", "*", "?", "é", "\\", "600", "-", ".",
]
HEADER_NAMES = [
    "To", "to", "TO", "Contact", "contact", "Call-ID", "CSeq", "Expires", "User-Agent",
    "Authorization", "Proxy-Authorization", "WWW-Authenticate", "Proxy-Authenticate",
    "Content-Length", "Via", "X-Other", "t", "m", "i", "Max-Forwards",
]
values = st.lists(st.sampled_from(PIECES), max_size=24).map("".join)
header = st.tuples(st.sampled_from(HEADER_NAMES), values).map(lambda nv: f"{nv[0]}:{nv[1]}")
start = st.sampled_from([
    "REGISTER sip:x SIP/2.0", "INVITE sip:a@b SIP/2.0", "SIP/2.0 401 Unauthorized",
    "SIP/2.0 200 OK", "SIP/2.0 403", "OPTIONS sip:x SIP/2.0",
])


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
