"""Fast, defensive SIP message parser working on raw bytes.

`parse_message` finds the header block with a few C-level bytes operations (no per-character
Python loops on the hot path), enforces hard size caps and returns a read-only `SipMessage`.
Only the start line, CSeq and Content-Length are validated and decoded eagerly; header values
stay bytes until asked for, and From/To, Contact, Via, digest credentials and challenges are
parsed on first access and cached.  Lazy parsing is tolerant: a malformed optional part yields
None or an empty tuple, never an exception.

Any malformed input makes `parse_message` raise `SipParseError` (a `ValueError`) carrying a
short machine-readable `.reason`; no other exception escapes for any bytes input.
"""

import re
from itertools import islice

from floodguard.sip._index import index_message
from floodguard.sip.fields import (
    COMMA_ITEMS,
    MAX_UINT_DIGITS,
    Contact,
    DigestChallenge,
    DigestCredentials,
    Party,
    decode_value,
    parse_challenges,
    parse_contacts,
    parse_credentials,
    parse_params,
    parse_party,
)
from floodguard.sip.framing import (
    COMPACT_B,
    COMPACT_FORMS,
    COMPACT_KEYS,
    MAX_CONTENT_LENGTH,
    MAX_HEADER_LINE,
    MAX_HEADERS,
    MAX_MESSAGE,
    TOKEN_B,
    SipParseError,
    index_headers_slow,
    is_start_line,
    parse_request_line,
    parse_status_line,
    split_lines_slow,
)

__all__ = [
    "COMPACT_FORMS",
    "MAX_CONTENT_LENGTH",
    "MAX_HEADERS",
    "MAX_HEADER_LINE",
    "MAX_MESSAGE",
    "Contact",
    "DigestChallenge",
    "DigestCredentials",
    "SipMessage",
    "SipParseError",
    "is_start_line",
    "parse_message",
]

_MAX_CSEQ = 2**31 - 1
# Auth header lines read for credentials or challenges (list items: fields.MAX_ITEMS).
_MAX_AUTH_VALUES = 8

# What may not stand in a header block: a control character other than HTAB (NUL, DEL, ...)
# or a CR that does not start a CRLF. Every reader of a message (this parser, the C scan, the
# registrar) must agree where each header line ends; a bare CR is a line end to some parsers
# and a value byte to others, which lets a spoofer plant a header in a reply that echoes it.
_BAD_HEADER_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")
# The same test in two cheap steps (the lookahead makes the regex above try every position):
# a control character, or more CRs than CRLFs.
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


_UNSET: object = object()


def _header_key(name: str) -> bytes:
    key = name.strip().lower().encode("utf-8", "replace")
    return COMPACT_B.get(key, key)


class SipMessage:
    """A parsed SIP request or response; read-only, rarely used parts are parsed lazily."""

    __slots__ = (
        "_first",
        "_multi",
        "_is_request",
        "_method",
        "_request_uri",
        "_status",
        "_reason",
        "_cseq_num",
        "_cseq_method",
        "_content_length",
        "_body",
        "_length",
        "_via",
        "_from",
        "_to",
        "_contacts",
        "_auth",
        "_challenges",
    )

    def __init__(
        self,
        first: dict[bytes, bytes],
        multi: dict[bytes, list[bytes]] | None,
        method: str | None,
        request_uri: str | None,
        status: int | None,
        reason: str | None,
        cseq_num: int | None,
        cseq_method: str | None,
        content_length: int | None,
        body: bytes,
        length: int,
    ) -> None:
        # first: canonical lower-case name -> first raw value (bytes, stripped when decoded);
        # multi: name -> every value in order, only built when some header repeats.
        self._first = first
        self._multi = multi
        self._is_request = method is not None
        self._method = method
        self._request_uri = request_uri
        self._status = status
        self._reason = reason
        self._cseq_num = cseq_num
        self._cseq_method = cseq_method
        self._content_length = content_length
        self._body = body
        self._length = length
        self._via: tuple[str | None, str | None] | None = None
        self._from: Party | None = None
        self._to: Party | None = None
        self._contacts: tuple[Contact, ...] | None = None
        self._auth: object = _UNSET
        self._challenges: tuple[DigestChallenge, ...] | None = None

    def __repr__(self) -> str:
        if self._is_request:
            what = f"{self._method} {self._request_uri}"
        else:
            what = f"{self._status} {self._reason}"
        return f"<SipMessage {what} call_id={self.call_id!r} cseq={self._cseq_num}>"

    # --- start line and eagerly parsed fields -------------------------------------------

    @property
    def is_request(self) -> bool:
        return self._is_request

    @property
    def method(self) -> str | None:
        """Upper-cased request method; None for responses."""
        return self._method

    @property
    def request_uri(self) -> str | None:
        return self._request_uri

    @property
    def status(self) -> int | None:
        return self._status

    @property
    def reason(self) -> str | None:
        return self._reason

    @property
    def cseq_num(self) -> int | None:
        return self._cseq_num

    @property
    def cseq_method(self) -> str | None:
        return self._cseq_method

    @property
    def content_length(self) -> int | None:
        return self._content_length

    @property
    def body(self) -> bytes:
        return self._body

    @property
    def length(self) -> int:
        """Bytes of the input consumed by this message (leading CRLFs, headers, body)."""
        return self._length

    # --- generic header access --------------------------------------------------------------

    def _get(self, key: bytes) -> str | None:
        value = self._first.get(key)
        return None if value is None else decode_value(value)

    def _raw_all(self, key: bytes) -> list[bytes]:
        if self._multi is not None:
            return list(self._multi.get(key, ()))
        value = self._first.get(key)
        return [] if value is None else [value]

    def _all(self, key: bytes) -> list[str]:
        if self._multi is not None:
            return [decode_value(v) for v in self._multi.get(key, ())]
        value = self._first.get(key)
        return [] if value is None else [decode_value(value)]

    def header(self, name: str) -> str | None:
        """First value of a header (case-insensitive, compact forms accepted)."""
        return self._get(_header_key(name))

    def headers(self, name: str) -> list[str]:
        """All values of a header, one per header line, in order."""
        return self._all(_header_key(name))

    @property
    def call_id(self) -> str | None:
        return self._get(b"call-id")

    @property
    def vias(self) -> list[str]:
        """Every Via value, one per header line, in order (`headers("via")` without the
        name lookup)."""
        return self._all(b"via")

    @property
    def from_value(self) -> str | None:
        """The From header's value (`header("from")` without the name lookup)."""
        return self._get(b"from")

    @property
    def to_value(self) -> str | None:
        """The To header's value (`header("to")` without the name lookup)."""
        return self._get(b"to")

    @property
    def user_agent(self) -> str | None:
        return self._get(b"user-agent")

    @property
    def expires(self) -> int | None:
        """The Expires header as a non-negative int, None when absent or malformed."""
        value = self._first.get(b"expires")
        if value is None:
            return None
        value = value.strip()
        if value.isdigit() and len(value) <= MAX_UINT_DIGITS:
            return int(value)
        return None

    # --- Via -----------------------------------------------------------------------------------

    def _parsed_via(self) -> tuple[str | None, str | None]:
        parsed = self._via
        if parsed is None:
            top = self._get(b"via")
            if top is None:
                parsed = (None, None)
            else:
                if "," in top:
                    item = COMMA_ITEMS.match(top)
                    top = item.group().strip() if item else ""
                parsed = (top, parse_params(top.partition(";")[2]).get("branch"))
            self._via = parsed
        return parsed

    @property
    def via(self) -> str | None:
        """The topmost Via value."""
        return self._parsed_via()[0]

    @property
    def via_branch(self) -> str | None:
        return self._parsed_via()[1]

    # --- From / To ---------------------------------------------------------------------------

    def _parsed_from(self) -> Party:
        parsed = self._from
        if parsed is None:
            parsed = self._from = parse_party(self._get(b"from"))
        return parsed

    def _parsed_to(self) -> Party:
        parsed = self._to
        if parsed is None:
            parsed = self._to = parse_party(self._get(b"to"))
        return parsed

    @property
    def from_uri(self) -> str | None:
        return self._parsed_from()[0]

    @property
    def from_user(self) -> str | None:
        return self._parsed_from()[1]

    @property
    def from_host(self) -> str | None:
        """Lower-cased host of the From URI, without port."""
        return self._parsed_from()[2]

    @property
    def from_tag(self) -> str | None:
        return self._parsed_from()[3]

    @property
    def to_uri(self) -> str | None:
        return self._parsed_to()[0]

    @property
    def to_user(self) -> str | None:
        return self._parsed_to()[1]

    @property
    def to_host(self) -> str | None:
        """Lower-cased host of the To URI, without port."""
        return self._parsed_to()[2]

    @property
    def to_tag(self) -> str | None:
        return self._parsed_to()[3]

    @property
    def aor(self) -> str | None:
        """Address of record from the To URI: "user@host" (host lower-cased, no port/params)."""
        _, user, host, _ = self._parsed_to()
        if not host:
            return None
        return f"{user}@{host}" if user else host

    # --- Contact / expiry ---------------------------------------------------------------

    @property
    def contacts(self) -> tuple[Contact, ...]:
        parsed = self._contacts
        if parsed is None:
            parsed = self._contacts = parse_contacts(self._all(b"contact"))
        return parsed

    @property
    def granted_expires(self) -> int | None:
        """Max `expires` param over the contacts, else the Expires header, else None."""
        best: int | None = None
        for contact in self.contacts:
            if contact.expires is not None and (best is None or contact.expires > best):
                best = contact.expires
        return best if best is not None else self.expires

    # --- digest authentication --------------------------------------------------------------

    @property
    def authorization(self) -> DigestCredentials | None:
        """Credentials from Authorization, else Proxy-Authorization (first Digest one wins)."""
        auth = self._auth
        if auth is _UNSET:
            auth = self._auth = parse_credentials(
                self._raw_all(b"authorization")[:_MAX_AUTH_VALUES],
                self._raw_all(b"proxy-authorization")[:_MAX_AUTH_VALUES],
            )
        return auth  # type: ignore[return-value]

    @property
    def challenges(self) -> tuple[DigestChallenge, ...]:
        """Every challenge of every WWW-Authenticate and Proxy-Authenticate header."""
        parsed = self._challenges
        if parsed is None:
            parsed = self._challenges = parse_challenges(
                self._raw_all(b"www-authenticate")[:_MAX_AUTH_VALUES]
                + self._raw_all(b"proxy-authenticate")[:_MAX_AUTH_VALUES]
            )
        return parsed


# --- the parser ----------------------------------------------------------------------------


def parse_message(data: bytes | bytearray | memoryview, *, stream: bool = False
                  ) -> SipMessage:
    """Parse one SIP message from the start of `data`.

    Leading CR/LF (keep-alives) are skipped.  Bytes after Content-Length are ignored and
    `SipMessage.length` says how many were consumed.  Without Content-Length the body is the
    rest of `data` (datagram semantics), or empty when `stream` is true (TCP framing, where
    RFC 3261 makes Content-Length mandatory).

    Raises SipParseError for malformed input; the reasons "incomplete" and "truncated_body"
    mean that more bytes may complete the message.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"parse_message needs bytes, got {type(data).__name__}")
    data = bytes(data) if type(data) is not bytes else data
    fast = index_message(data, stream)
    if fast is not None:
        first, multi, method, uri, status, reason, cseq_num, cseq_method, clen, body, end = fast
        return SipMessage(
            first, multi, method, uri, status, reason, cseq_num, cseq_method, clen, body, end
        )
    return _parse(data, stream)


def _parse(data: bytes, stream: bool) -> SipMessage:
    """The reference parser: every message the C index (floodguard.sip._index) declines, and
    what tests/unit/test_sip_index.py compares that index with."""
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

    return SipMessage(
        first, multi, method, uri, status, reason, cseq_num, cseq_method, clen, body, end
    )
