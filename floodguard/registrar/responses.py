"""SIP responses and out-of-dialog requests as bytes, plus a few URI helpers.

Responses copy Via, From, To, Call-ID and CSeq from the request (RFC 3261 §8.2.6), stamp the top
Via with ``received``/``rport`` (RFC 3581) and add a To tag. `salvage_400` answers a request the
parser rejected, using whatever of those headers it can still find, so a malformed request gets a
400 with a reason instead of a silent timeout.
"""

from __future__ import annotations

import email.utils
import ipaddress
import re
import secrets
import time
import zlib
from typing import NamedTuple

from floodguard.sip.message import SipMessage

SERVER = "floodguard"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER"
BRANCH_MAGIC = "z9hG4bK"

REASONS: dict[int, str] = {
    100: "Trying",
    200: "OK",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    500: "Server Internal Error",
    503: "Service Unavailable",
    505: "Version Not Supported",
}

# Reason phrases for requests the parser rejected (parser reason code -> phrase).
PARSE_REASONS: dict[str, str] = {
    "bad_start_line": "Bad Request - Malformed Request-Line",
    "bad_header": "Bad Request - Malformed Header",
    "header_too_long": "Bad Request - Header Too Long",
    "too_many_headers": "Bad Request - Too Many Headers",
    "bad_content_length": "Bad Request - Bad Content-Length",
    "bad_cseq": "Bad Request - Malformed CSeq",
    "too_large": "Bad Request - Message Too Large",
    "truncated_body": "Bad Request - Body Shorter Than Content-Length",
    "incomplete": "Bad Request - Incomplete Message",
    "control_char": "Bad Request - Control Character in Header",
}

_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_CSEQ = re.compile(rb"[0-9]{1,10}[ \t]+[A-Za-z0-9.!%*_+`'~-]+")

_SALVAGE_NAMES = {
    b"via": b"Via",
    b"v": b"Via",
    b"from": b"From",
    b"f": b"From",
    b"to": b"To",
    b"t": b"To",
    b"call-id": b"Call-ID",
    b"i": b"Call-ID",
    b"cseq": b"CSeq",
}
_MAX_SALVAGED_LINE = 1024
_MAX_SALVAGED_VIAS = 16

_ESCAPED = re.compile(r"\\.")
_BAD_URI_CHARS = re.compile(r'[\x00-\x20<>"\x7f]')
_date_cache: tuple[int, str] = (0, "")


def http_date(now: float | None = None) -> str:
    """RFC 1123 date for the Date header, formatted once per second."""
    global _date_cache
    second = int(time.time() if now is None else now)
    if _date_cache[0] != second:
        _date_cache = (second, email.utils.formatdate(second, usegmt=True))
    return _date_cache[1]


def new_token(nbytes: int = 8) -> str:
    """A random hex token for branches, tags and Call-IDs."""
    return secrets.token_hex(nbytes)


def _split_first(value: str) -> tuple[str, str]:
    """Split a header line holding several comma-separated values into (first, rest)."""
    if "," not in value:
        return value, ""
    quoted = False
    for index, char in enumerate(value):
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            return value[:index].rstrip(), value[index + 1 :].lstrip()
    return value, ""


def _via_host(sent_by: str) -> str:
    """Host of a Via sent-by (``host``, ``host:port``, ``[v6]:port``), brackets removed."""
    if sent_by.startswith("["):
        return sent_by[1:].partition("]")[0]
    return sent_by.rpartition(":")[0] if sent_by.count(":") == 1 else sent_by


def stamp_via(via: str, ip: str, port: int) -> str:
    """Add ``received`` (when the sent-by host differs, or rport asks) and fill ``rport``."""
    head, _, params = via.partition(";")
    parts = head.split()
    sent_by = parts[-1] if len(parts) >= 2 else ""
    if not params:
        if _via_host(sent_by) == ip:
            return via
        return f"{via};received={ip}"
    names = params.split(";")
    wants_rport = False
    out: list[str] = []
    for item in names:
        name = item.partition("=")[0].strip().lower()
        if name == "received":
            continue
        if name == "rport":
            wants_rport = True
            continue
        out.append(item)
    if wants_rport:
        out.append(f"rport={port}")
        out.append(f"received={ip}")
    elif _via_host(sent_by) != ip:
        out.append(f"received={ip}")
    return head + ";" + ";".join(out)


def to_tag_for(call_id: str, from_value: str, cseq: int | None) -> str:
    """A To tag that is the same for retransmissions of one request (stateless UAS, §8.2.7).

    Derived from Call-ID, the From header (which holds the From tag) and the CSeq number.
    """
    # str has no lone surrogates here (values come from decoding bytes with "replace"), so
    # the strict UTF-8 codec (mypyc's fast path) gives the same bytes as errors="replace"
    seed = (call_id + "|" + from_value + "|" + ("None" if cseq is None else str(cseq))).encode()
    return f"fg{zlib.crc32(seed):08x}"


class ReplyHead(NamedTuple):
    """The request headers a response copies, decoded once per request."""

    vias: list[str]
    from_value: str
    to_value: str
    call_id: str
    cseq_num: int | None
    cseq_method: str | None
    to_tag: str | None

    @classmethod
    def of(cls, msg: SipMessage) -> ReplyHead:
        return cls(msg.vias, msg.from_value or "", msg.to_value or "",
                   msg.call_id or "", msg.cseq_num, msg.cseq_method, msg.to_tag)


def response(
    msg: SipMessage | ReplyHead,
    status: int,
    ip: str,
    port: int,
    *,
    reason: str | None = None,
    headers: list[str] | tuple[str, ...] = (),
    date: bool = False,
) -> bytes:
    """Build a response to a request received from (ip, port); `headers` are extra lines."""
    head = msg if isinstance(msg, ReplyHead) else ReplyHead.of(msg)
    vias = head.vias
    first, rest = _split_first(vias[0])
    top = stamp_via(first, ip, port)
    if rest:
        top = f"{top}, {rest}"
    if len(vias) > 1:
        top += "\r\nVia: " + "\r\nVia: ".join(vias[1:])
    to = head.to_value
    if status > 100 and head.to_tag is None:
        to = f"{to};tag={to_tag_for(head.call_id, head.from_value, head.cseq_num)}"
    extra = "\r\n".join(headers) + "\r\n" if headers else ""
    # a request without a CSeq (answered 400) gets none back rather than a made-up one
    cseq = "" if head.cseq_num is None else f"CSeq: {head.cseq_num} {head.cseq_method}\r\n"
    if date:
        extra += f"Date: {http_date()}\r\n"
    return (
        f"SIP/2.0 {status} {reason or REASONS.get(status, 'Unknown')}\r\nVia: {top}\r\n"
        f"From: {head.from_value}\r\nTo: {to}\r\nCall-ID: {head.call_id}\r\n"
        f"{cseq}{extra}"
        f"Server: {SERVER}\r\nContent-Length: 0\r\n\r\n"
    ).encode("utf-8", "replace")


def salvage_400(data: bytes, parse_reason: str, ip: str, port: int) -> bytes | None:
    """A 400 (or 505) for a request the parser rejected, or None when nothing can be answered.

    Responses, ACKs and input without a Via get no answer: a response needs a Via to follow,
    and an ACK is never answered.
    """
    cut = data.find(b"\r\n\r\n", 0, 65536)
    head = data[: cut if cut >= 0 else 65536]
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    start = lines[0].strip(b"\r\n ")
    if start[:4].upper() == b"SIP/" or start[:4].upper() == b"ACK ":
        return None
    found: dict[bytes, list[bytes]] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            continue
        canon = _SALVAGE_NAMES.get(name.strip().lower())
        value = value.strip()
        if canon is None or not value or len(value) > _MAX_SALVAGED_LINE:
            continue
        if _CONTROL.search(value) or (canon == b"CSeq" and not _CSEQ.fullmatch(value)):
            # never echo a CR, NUL or other control byte: a reader that splits on it would see
            # a header line the sender planted in our reply
            continue
        values = found.setdefault(canon, [])
        if not values or (canon == b"Via" and len(values) < _MAX_SALVAGED_VIAS):
            values.append(value)
    vias = found.get(b"Via")
    if not vias:
        return None
    status, phrase = 400, PARSE_REASONS.get(parse_reason, "Bad Request")
    parts = start.split(b" ")
    if len(parts) == 3 and parts[2].upper().startswith(b"SIP/") and parts[2].upper() != b"SIP/2.0":
        status, phrase = 505, "Version Not Supported"
    first, rest = _split_first(vias[0].decode("utf-8", "replace"))
    out = [f"SIP/2.0 {status} {phrase}", "Via: " + stamp_via(first, ip, port)
           + (", " + rest if rest else "")]
    out.extend("Via: " + v.decode("utf-8", "replace") for v in vias[1:])
    for canon in (b"From", b"To", b"Call-ID", b"CSeq"):
        kept = found.get(canon)
        if kept:
            text = kept[0].decode("utf-8", "replace")
            if canon == b"To" and ";tag=" not in text.lower().replace(" ", ""):
                text += ";tag=fg400"
            out.append(canon.decode() + ": " + text)
    out += ["Server: " + SERVER, "Content-Length: 0", "", ""]
    return "\r\n".join(out).encode("utf-8", "replace")


def options_request(
    target_uri: str, local_ip: str, local_port: int, transport: str, branch: str,
    call_id: str, tag: str,
) -> bytes:
    """An out-of-dialog OPTIONS used as a liveness probe (RFC 3261 §11)."""
    host = f"[{local_ip}]" if ":" in local_ip else local_ip
    lines = [
        f"OPTIONS {target_uri} SIP/2.0",
        f"Via: SIP/2.0/{transport.upper()} {host}:{local_port};branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:{SERVER}@{host}>;tag={tag}",
        f"To: <{target_uri}>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        "Accept: application/sdp",
        f"User-Agent: {SERVER}",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8", "replace")


def uri_user(uri: str | None) -> str | None:
    """User part of a sip:/sips: URI (without password), None when there is none."""
    if not uri:
        return None
    scheme, colon, rest = uri.partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        return None
    at = rest.find("@")
    if at <= 0:
        return None
    user = rest[:at].partition(":")[0].partition(";")[0]
    return user or None


def uri_scheme_ok(uri: str | None) -> bool:
    """True for a sip: or sips: URI."""
    if not uri:
        return False
    return uri[:4].lower() == "sip:" or uri[:5].lower() == "sips:"


def plausible_party(value: str | None) -> bool:
    """A From/To value whose quoting and brackets close and whose URI is plausible.

    Cheaper than a full name-addr parse; used where only validity matters.
    """
    if not value:
        return False
    if '"' in value:
        text = _ESCAPED.sub("", value) if "\\" in value else value
        if text.count('"') % 2:
            return False
        lt = value.rfind("<")
    else:
        lt = value.find("<")
    if lt >= 0:
        gt = value.find(">", lt)
        if gt < 0:
            return False
        return plausible_uri(value[lt + 1 : gt])
    return plausible_uri(value.partition(";")[0].strip())


def plausible_uri(uri: str | None) -> bool:
    """A URI with a scheme and no characters that cannot appear in one (From/To checks)."""
    if not uri:
        return False
    scheme, colon, rest = uri.partition(":")
    return bool(colon and rest and scheme.isalnum() and not _BAD_URI_CHARS.search(uri))


def valid_contact_uri(uri: str) -> bool:
    """A contact we are willing to store: sip/sips, a host, no whitespace, sane length."""
    if not uri_scheme_ok(uri) or len(uri) > 512:
        return False
    if _BAD_URI_CHARS.search(uri):
        return False
    rest = uri.partition(":")[2].rpartition("@")[2].partition(";")[0].partition("?")[0]
    if rest.startswith("["):
        inner = rest[1:].partition("]")[0]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            return False
        return True
    return bool(rest.partition(":")[0])
