"""The fields the C scan (floodguard.sip._scan) must give exactly as the Python parsers do.

Whenever ``scan_sip`` answers, ``sip_fields`` of its view equals ``sip_fields`` of what
``parse_message`` makes of the same bytes; whenever ``scan_packet`` answers, its first five
items equal ``packet_fields`` of ``parse_packet``'s packet. One list for the differential
checks of tests/unit/test_sip_scan.py and of the fuzz target fuzz/scan_target.py, so the two
cannot drift apart. Reads attributes only: the caller picks which parse or scan it compares.
"""

from __future__ import annotations

from typing import Any


def sip_fields(msg: Any) -> tuple[object, ...]:
    """What the guard and the policy engine read of a SIP message (a parsed message, or the
    scan's view of one), as a comparable tuple."""
    auth = msg.authorization
    return (
        msg.is_request, msg.method, msg.status, msg.call_id, msg.cseq_num, msg.cseq_method,
        msg.aor, msg.user_agent,
        None if auth is None else (auth.scheme, auth.username, auth.nonce),
        tuple((c.scheme, c.nonce, c.stale) for c in msg.challenges),
        msg.granted_expires,
    )


def packet_fields(pkt: Any) -> tuple[object, ...]:
    """The addresses and ports of a parsed packet, in scan_packet's order."""
    return (pkt.src, pkt.dst, pkt.proto, pkt.sport, pkt.dport)
