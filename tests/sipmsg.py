"""Test helpers: craft SIP messages and IP packets for the guard (scapy is fine in tests)."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from floodguard.sip import digest

REALM = "floodguard"


def register(user: str, *, src: str, call_id: str, cseq: int, auth: str | None = None,
             host: str = "sip.test", ua: str = "TestPhone/1.0", expires: int = 3600) -> bytes:
    lines = [
        f"REGISTER sip:{host} SIP/2.0",
        f"Via: SIP/2.0/UDP {src}:5060;branch=z9hG4bK{call_id}{cseq}",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{host}>;tag=t{call_id}",
        f"To: <sip:{user}@{host}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{user}@{src}:5060>",
        f"Expires: {expires}",
        f"User-Agent: {ua}",
    ]
    if auth:
        lines.append(f"Authorization: {auth}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def response(status: int, reason: str, user: str, *, call_id: str, cseq: int,
             challenge_nonce: str | None = None, stale: bool = False, host: str = "sip.test",
             expires: int | None = None, src: str = "192.0.2.10") -> bytes:
    lines = [
        f"SIP/2.0 {status} {reason}",
        f"Via: SIP/2.0/UDP {src}:5060;branch=z9hG4bK{call_id}{cseq}",
        f"From: <sip:{user}@{host}>;tag=t{call_id}",
        f"To: <sip:{user}@{host}>;tag=srv",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
    ]
    if challenge_nonce:
        lines.append("WWW-Authenticate: " + digest.challenge_header(
            REALM, challenge_nonce, "MD5", stale=stale))
    if expires is not None:
        lines.append(f"Contact: <sip:{user}@{src}:5060>;expires={expires}")
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def auth_value(user: str, password: str, nonce: str, host: str = "sip.test",
               opaque: str | None = None) -> str:
    value = digest.authorization_header(user, password, REALM, nonce, f"sip:{host}", "REGISTER")
    return value if opaque is None else f'{value}, opaque="{opaque}"'


def opaque_of(packet: bytes | bool) -> str | None:
    """The opaque of the first challenge in a packet the guard handed back (as a client would
    echo it), or None when the guard let the original through."""
    if not isinstance(packet, bytes):
        return None
    from floodguard.packet import parse_packet
    from floodguard.sip.message import parse_message

    pkt = parse_packet(packet)
    assert pkt is not None
    challenges = parse_message(pkt.payload).challenges
    return challenges[0].opaque if challenges else None


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    layer = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return bytes(layer / UDP(sport=sport, dport=dport) / payload)


def tcp(src: str, dst: str, sport: int, dport: int, payload: bytes, flags: str = "PA",
        seq: int = 0, ack: int = 0) -> bytes:
    layer = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return bytes(layer / TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack) / payload)
