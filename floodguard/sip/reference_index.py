"""The reference header index, in Python: for every message the C index
(``floodguard.sip._index``) declines, the same fields it computes for the messages it answers, or
SipParseError. ``message.parse_message`` builds a SipMessage from whichever answered;
tests/unit/test_sip_index.py and fuzz/index_target.py hold the two equal."""

import re
from itertools import islice

from floodguard.sip.fields import MAX_UINT_DIGITS
from floodguard.sip.framing import (
    COMPACT_KEYS,
    MAX_CONTENT_LENGTH,
    MAX_HEADER_LINE,
    MAX_HEADERS,
    MAX_MESSAGE,
    TOKEN_B,
    SipParseError,
    index_headers_slow,
    parse_request_line,
    parse_status_line,
    split_lines_slow,
)

# first raw value by name, all values when one repeats, method, URI, status, reason, CSeq number
# and method, Content-Length, body, where the message ends
Indexed = tuple[
    dict[bytes, bytes], dict[bytes, list[bytes]] | None, str | None, str | None, int | None,
    str | None, int | None, str | None, int | None, bytes, int,
]

_MAX_CSEQ = 2**31 - 1

# What may not stand in a header block: a control character other than HTAB (NUL, DEL, ...)
# or a CR that does not start a CRLF. Every reader of a message (this parser, the C scan, the
# registrar) must agree where each header line ends; a bare CR is a line end to some parsers
# and a value byte to others, which lets a spoofer plant a header in a reply that echoes it.
_BAD_HEADER_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")
# The same test in two cheap steps (the lookahead makes the regex above try every position):
# a control character, or more CRs than CRLFs.
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def index_reference(data: bytes, stream: bool) -> Indexed:
    """What ``index_message`` answers for data, or SipParseError: the fields of a message in
    the order SipMessage takes them."""
    n = len(data)
    if not n:
        raise SipParseError("empty")
    off = 0
    first_byte = data[0]
    if first_byte == 13 or first_byte == 10:
        off = n - len(data.lstrip(b"\r\n"))
        if off == n:
            raise SipParseError("empty")
        first_byte = data[off]
    if not (65 <= first_byte <= 90 or 97 <= first_byte <= 122):
        raise SipParseError("not_sip")

    limit = off + MAX_MESSAGE
    lines: list[bytes] | None = None
    if data.endswith(b"\r\n\r\n") and n - off <= MAX_MESSAGE:
        # Typical body-less datagram: the header block ends at the end of the data, unless
        # an earlier blank line shows up as an empty line.
        hend = n - 4
        lines = data[off:hend].splitlines()
        if b"" in lines:
            lines = None
    if lines is None:
        hend = data.find(b"\r\n\r\n", off, limit)
        if hend >= 0:
            lines = data[off:hend].splitlines()
            if b"" in lines:
                # A bare-LF blank line before the CRLFCRLF ends the headers earlier.
                lines = None
    if lines is None:
        hend, body_start, lines = split_lines_slow(data, off, limit)
    else:
        body_start = hend + 4
        if len(lines) > MAX_HEADERS + 1:
            raise SipParseError("too_many_headers", str(len(lines) - 1))
        if hend - off > MAX_HEADER_LINE and max(map(len, lines)) > MAX_HEADER_LINE:
            raise SipParseError("header_too_long")

    stop = hend + 2 if data[hend:hend + 2] == b"\r\n" else hend
    if (_CONTROL_BYTES.search(data, off, stop) is not None
            or data.count(b"\r", off, stop) != data.count(b"\r\n", off, stop)):
        bad = _BAD_HEADER_BYTES.search(data, off, stop)  # the first one, for the message
        if bad is not None:
            raise SipParseError("control_char",
                                f"byte 0x{data[bad.start()]:02x} in the header block")
    start = lines[0]
    method: str | None = None
    uri: str | None = None
    status: int | None = None
    reason: str | None = None
    if (first_byte == 83 or first_byte == 115) and start[:4].upper() == b"SIP/":  # "S", "s"
        status, reason = parse_status_line(start)
    else:
        method, uri = parse_request_line(start)
    # Index the header lines: first raw value by canonical name, all values if any repeat.
    # The common case is settled with a few C-level checks; anything unusual (a repeated
    # header, folding, whitespace before a colon, compact forms, an empty name or value, the
    # latter also covering a line without a colon) is redone line by line.
    first: dict[bytes, bytes] = {}
    for line in islice(lines, 1, None):
        name, _, value = line.partition(b":")
        first[name.lower()] = value
    multi: dict[bytes, list[bytes]] | None = None
    if len(first) == len(lines) - 1 and b"" not in first and b"" not in first.values():
        names = b"\n".join(first)
        if b" " in names or b"\t" in names or not COMPACT_KEYS.isdisjoint(first):
            first, multi = index_headers_slow(lines)
    else:
        first, multi = index_headers_slow(lines)

    clen: int | None = None
    raw = first.get(b"content-length")
    if raw is not None:
        raw = raw.strip()
        if not raw.isdigit() or len(raw) > 6:
            raise SipParseError("bad_content_length", raw[:20].decode("utf-8", "replace"))
        clen = int(raw)
        if clen > MAX_CONTENT_LENGTH:
            raise SipParseError("bad_content_length", str(clen))
        if multi is not None:
            for value in multi[b"content-length"]:
                value = value.strip()
                if value != raw and (not value.isdigit() or len(value) > 6 or int(value) != clen):
                    raise SipParseError("bad_content_length", "conflicting values")

    cseq_num: int | None = None
    cseq_method: str | None = None
    raw = first.get(b"cseq")
    if raw is not None:
        parts = raw.split()
        if (
            len(parts) != 2
            or not parts[0].isdigit()
            or len(parts[0]) > MAX_UINT_DIGITS
            or parts[1].strip(TOKEN_B)
        ):
            raise SipParseError("bad_cseq", raw[:40].decode("utf-8", "replace"))
        cseq_num = int(parts[0])
        if cseq_num > _MAX_CSEQ:
            raise SipParseError("bad_cseq", str(cseq_num))
        cseq_method = parts[1].upper().decode("ascii")

    end = body_start + clen if clen is not None else body_start if stream else n
    if end - off > MAX_MESSAGE:
        raise SipParseError("too_large", str(end - off))
    if end > n:
        raise SipParseError("truncated_body", f"{n - body_start} of {clen}")
    body = data[body_start:end] if end > body_start else b""

    return first, multi, method, uri, status, reason, cseq_num, cseq_method, clen, body, end
