"""The fields the C scans (sip._scan, sip._index) must give exactly as the Python parsers do.

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


_NAMES = ("via", "from", "to", "call-id", "cseq", "contact", "expires", "content-length",
          "authorization", "www-authenticate", "require", "user-agent", "max-forwards")


def message_fields(msg: Any, data: bytes) -> tuple[object, ...]:
    """Everything a parsed message (`parse_message` of `data`) tells, as a comparable tuple:
    what the C index (floodguard.sip._index) must give exactly as the Python parser does.
    Every header named in `data`, and the usual ones, are read one by one and all at once."""
    names = set(_NAMES)
    for line in data.split(b"\n")[1:]:
        name = line.partition(b":")[0].strip()
        if not name:
            break
        names.add(name.decode("utf-8", "replace"))
    return (
        msg.is_request, msg.method, msg.request_uri, msg.status, msg.reason, msg.cseq_num,
        msg.cseq_method, msg.content_length, msg.body, msg.length, msg.call_id, msg.user_agent,
        msg.expires, msg.via, msg.via_branch, msg.from_uri, msg.from_user, msg.from_host,
        msg.from_tag, msg.to_uri, msg.to_user, msg.to_host, msg.to_tag, msg.aor, msg.contacts,
        msg.granted_expires, msg.authorization, msg.challenges,
        tuple((name, msg.header(name), tuple(msg.headers(name))) for name in sorted(names)),
    )
