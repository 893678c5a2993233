"""How a SIP message is framed: size caps, compact header names, start lines, and the
line-by-line header reading `floodguard.sip.message` falls back to for unusual input (bare LF,
folding, compact forms, odd whitespace, an incomplete header block).

Everything here works on bytes and raises `SipParseError` with a short machine-readable reason.
"""

from itertools import islice

from floodguard.errors import FloodguardError

MAX_MESSAGE = 65536
MAX_HEADER_LINE = 8192
MAX_HEADERS = 128
MAX_CONTENT_LENGTH = 65536

# RFC 3261 section 7.3.3 plus the later registrations in the IANA SIP parameters registry.
COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}
COMPACT_B: dict[bytes, bytes] = {k.encode(): v.encode() for k, v in COMPACT_FORMS.items()}
COMPACT_KEYS = frozenset(COMPACT_B)

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
TOKEN_B = TOKEN_CHARS.encode()


class SipParseError(FloodguardError, ValueError):
    """Raised for any malformed SIP input; `reason` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _start_line_error(line: bytes) -> SipParseError:
    """Classify a start line that is neither a valid request line nor a status line."""
    reason = "bad_start_line" if b"SIP/" in line.upper() else "not_sip"
    return SipParseError(reason, line[:80].decode("utf-8", "replace"))


def parse_status_line(line: bytes) -> tuple[int, str]:
    parts = line.split(b" ", 2)
    code = parts[1] if len(parts) > 1 else b""
    if (
        parts[0].upper() != b"SIP/2.0"
        or len(code) != 3
        or not code.isdigit()
        or not 49 <= code[0] <= 54
    ):
        raise SipParseError("bad_start_line", line[:80].decode("utf-8", "replace"))
    return int(code), parts[2].decode("utf-8", "replace") if len(parts) == 3 else ""


def parse_request_line(line: bytes) -> tuple[str, str]:
    parts = line.split(b" ")
    if len(parts) != 3 or (parts[2] != b"SIP/2.0" and parts[2].upper() != b"SIP/2.0"):
        raise _start_line_error(line)
    method, uri, _ = parts
    if not method or not uri or method.strip(TOKEN_B):
        raise _start_line_error(line)
    return method.upper().decode("ascii"), uri.decode("utf-8", "replace")


def _check_start_line(line: bytes) -> None:
    if line[:4].upper() == b"SIP/":
        parse_status_line(line)
    else:
        parse_request_line(line)


def is_start_line(line: bytes) -> bool:
    """Is this (without its line end) a SIP request or status line?"""
    try:
        _check_start_line(line)
    except SipParseError:
        return False
    return True


def split_lines_slow(data: bytes, off: int, limit: int) -> tuple[int, int, list[bytes]]:
    """Split header lines on LF with an optional CR; return (end, body start, lines).

    Used for bare-LF messages and for data without a complete header block, where it
    tells "incomplete" apart from input that is already known to be bad.
    """
    lines: list[bytes] = []
    pos = off
    while True:
        nl = data.find(b"\n", pos, limit)
        if nl < 0:
            if len(data) - off >= MAX_MESSAGE:
                raise SipParseError("too_large", "no end of headers within the size cap")
            if len(data) - pos > MAX_HEADER_LINE:
                raise SipParseError("header_too_long", f"line {len(lines)}")
            if lines:
                _check_start_line(lines[0])
            raise SipParseError("incomplete")
        end = nl - 1 if nl > pos and data[nl - 1] == 13 else nl
        if end == pos:
            return pos, nl + 1, lines
        if end - pos > MAX_HEADER_LINE:
            raise SipParseError("header_too_long", f"line {len(lines)}")
        if len(lines) > MAX_HEADERS:
            raise SipParseError("too_many_headers", f"more than {MAX_HEADERS}")
        lines.append(data[pos:end])
        pos = nl + 1


def index_headers_slow(
    lines: list[bytes],
) -> tuple[dict[bytes, bytes], dict[bytes, list[bytes]] | None]:
    """Line-by-line indexing with folding, compact forms, odd whitespace and validation."""
    multi: dict[bytes, list[bytes]] = {}
    last: list[bytes] | None = None
    count = 0
    for line in islice(lines, 1, None):
        if line[:1] in (b" ", b"\t"):
            if last is None:
                raise SipParseError("bad_header", "continuation line without a header")
            joined = last[-1].rstrip() + b" " + line.strip()
            if len(joined) > MAX_HEADER_LINE:
                raise SipParseError("header_too_long", "folded header")
            last[-1] = joined
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            raise SipParseError("bad_header", line[:40].decode("utf-8", "replace"))
        name = name.rstrip(b" \t").lower()
        if not name or b" " in name or b"\t" in name:
            raise SipParseError("bad_header", name[:40].decode("utf-8", "replace"))
        name = COMPACT_B.get(name, name)
        last = multi.get(name)
        if last is None:
            last = multi[name] = [value]
        else:
            last.append(value)
        count += 1
    first = {name: values[0] for name, values in multi.items()}
    return first, (multi if count != len(first) else None)
