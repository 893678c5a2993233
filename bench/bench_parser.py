"""Micro-benchmark of the hot-path parsers: SIP messages and IP/UDP headers.

Run as `python bench/bench_parser.py`.  Prints microseconds per call (best of several runs)
for a typical REGISTER, a 200 OK and a 401: parsing alone, parsing plus reading the fields
the guard uses, and `parse_packet` on the enclosing IPv4/IPv6 packet; then scapy dissecting the
same packet's IP/UDP layers, to show why scapy stays off the per-packet path.
"""

import sys
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from floodguard.packet import parse_packet  # noqa: E402
from floodguard.sip.message import SipMessage, parse_message  # noqa: E402

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "Alice" <sip:alice@example.com>;tag=1928301774\r\n'
    b"To: <sip:alice@example.com>\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 2 REGISTER\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060;transport=udp>;expires=3600\r\n"
    b"Expires: 3600\r\n"
    b"User-Agent: Acme SoftPhone 1.2.3\r\n"
    b'Authorization: Digest username="alice", realm="example.com", '
    b'nonce="AAAAAAAPQkC7cUJufG3Y4p-19pLfMnsmurME3lKF7CY", uri="sip:example.com", '
    b'response="6629fae49393a05397450978507c4ef1", algorithm=MD5, qop=auth, '
    b'nc=00000001, cnonce="0a4f113b"\r\n'
    b"Content-Length: 0\r\n\r\n"
)

OK_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport=5060;"
    b"received=192.0.2.10\r\n"
    b'From: "Alice" <sip:alice@example.com>;tag=1928301774\r\n'
    b"To: <sip:alice@example.com>;tag=37GkEhwl6\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 2 REGISTER\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060;transport=udp>;expires=3600\r\n"
    b"Server: floodguard\r\n"
    b"Content-Length: 0\r\n\r\n"
)

UNAUTHORIZED_401 = (
    b"SIP/2.0 401 Unauthorized\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport=5060;"
    b"received=192.0.2.10\r\n"
    b'From: "Alice" <sip:alice@example.com>;tag=1928301774\r\n'
    b"To: <sip:alice@example.com>;tag=37GkEhwl6\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 1 REGISTER\r\n"
    b'WWW-Authenticate: Digest realm="example.com", '
    b'nonce="AAAAAAAPQkC7cUJufG3Y4p-19pLfMnsmurME3lKF7CY", algorithm=MD5, qop="auth"\r\n'
    b"Server: floodguard\r\n"
    b"Content-Length: 0\r\n\r\n"
)

MESSAGES = {"REGISTER": REGISTER, "200 OK": OK_200, "401": UNAUTHORIZED_401}


def read_fields(msg: SipMessage) -> None:
    """Touch what the guard reads per message (forces the lazy parts)."""
    _ = (msg.method, msg.status, msg.call_id, msg.cseq_num, msg.cseq_method)
    _ = (msg.aor, msg.from_tag, msg.to_tag, msg.via_branch, msg.user_agent)
    if msg.is_request:
        _ = (msg.contacts, msg.granted_expires, msg.authorization)
    elif msg.status == 401:
        _ = msg.challenges
    else:
        _ = (msg.contacts, msg.granted_expires)


def best_us(fn: Callable[[], object], number: int) -> float:
    """Best-of-7 microseconds per call."""
    return min(timeit.repeat(fn, number=number, repeat=7)) / number * 1e6


def main() -> None:
    try:
        from scapy.layers.inet import IP, UDP
        from scapy.layers.inet6 import IPv6
    except ImportError:  # pragma: no cover - scapy is a project dependency
        IP = UDP = IPv6 = None  # noqa: N806

    print(f"{'message':10s} {'bytes':>5s} {'parse':>8s} {'+fields':>8s} "
          f"{'ip4':>7s} {'ip6':>7s} {'pipeline':>8s} {'scapy4':>8s} {'ratio':>6s}")
    for name, raw in MESSAGES.items():
        parse = best_us(lambda raw=raw: parse_message(raw), 20000)
        full = best_us(lambda raw=raw: read_fields(parse_message(raw)), 10000)
        if IP is None:
            print(f"{name:10s} {len(raw):5d} {parse:8.2f} {full:8.2f}  (scapy not installed)")
            continue
        pkt4 = bytes(IP(src="192.0.2.10", dst="198.51.100.1") / UDP(sport=5060, dport=5060) / raw)
        pkt6 = bytes(
            IPv6(src="2001:db8::10", dst="2001:db8::1") / UDP(sport=5060, dport=5060) / raw
        )
        assert parse_packet(pkt4) is not None and parse_packet(pkt6) is not None
        ip4 = best_us(lambda p=pkt4: parse_packet(p), 20000)
        ip6 = best_us(lambda p=pkt6: parse_packet(p), 20000)

        def pipeline(p: bytes = pkt4) -> None:
            parsed = parse_packet(p)
            assert parsed is not None
            read_fields(parse_message(parsed.payload))

        whole = best_us(pipeline, 10000)

        def with_scapy(p: bytes = pkt4) -> object:
            pkt = IP(p)
            udp = pkt[UDP]
            return pkt.src, pkt.dst, udp.sport, udp.dport, bytes(udp.payload)

        scapy4 = best_us(with_scapy, 500)
        print(f"{name:10s} {len(raw):5d} {parse:8.2f} {full:8.2f} {ip4:7.2f} {ip6:7.2f} "
              f"{whole:8.2f} {scapy4:8.1f} {scapy4 / ip4:5.0f}x")
    print(
        "\nmicroseconds per call, best of 7 runs.  parse: parse_message alone; +fields: parse and"
        "\nread the fields the guard uses; ip4/ip6: parse_packet on the IPv4/IPv6 packet; pipeline:"
        "\nparse_packet + parse_message + fields on the IPv4 packet; scapy4: scapy dissecting only"
        "\nthe IPv4 packet's IP/UDP layers; ratio: scapy4 / ip4."
    )


if __name__ == "__main__":
    main()
