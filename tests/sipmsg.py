"""Test helpers: craft SIP messages and IP packets for the guard (scapy is fine in tests)."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6

from floodguard.sip import build, digest

REALM = "floodguard"


def register(user: str, *, src: str, call_id: str, cseq: int, auth: str | None = None,
             host: str = "sip.test", ua: str = "TestPhone/1.0", expires: int = 3600) -> bytes:
    return build.register(host, user=user, local=f"{src}:5060", call_id=call_id, cseq=cseq,
                          expires=expires, user_agent=ua, authorization=auth or None,
                          branch=_branch(call_id, cseq), rport=False, tag=f"t{call_id}")


def response(status: int, reason: str, user: str, *, call_id: str, cseq: int,
             challenge_nonce: str | None = None, stale: bool = False, host: str = "sip.test",
             expires: int | None = None, src: str = "192.0.2.10") -> bytes:
    headers = []
    if challenge_nonce:
        headers.append("WWW-Authenticate: " + digest.challenge_header(
            REALM, challenge_nonce, "MD5", stale=stale))
    if expires is not None:
        headers.append(f"Contact: <sip:{user}@{src}:5060>;expires={expires}")
    return build.response(status, reason=reason,
                          via=f"SIP/2.0/UDP {src}:5060;branch={_branch(call_id, cseq)}",
                          from_=f"<sip:{user}@{host}>;tag=t{call_id}",
                          to=f"<sip:{user}@{host}>;tag=srv", call_id=call_id, cseq=cseq,
                          headers=headers)


def _branch(call_id: str, cseq: int) -> str:
    return f"{build.BRANCH_MAGIC}{call_id}{cseq}"


def auth_value(user: str, password: str, nonce: str, host: str = "sip.test",
               opaque: str | None = None) -> str:
    return digest.authorization_header(user, password, REALM, nonce, f"sip:{host}", "REGISTER",
                                       opaque=opaque)


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
