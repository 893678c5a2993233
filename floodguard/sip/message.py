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
    MAX_CONTENT_LENGTH,
    MAX_HEADER_LINE,
    MAX_HEADERS,
    MAX_MESSAGE,
    SipParseError,
    is_start_line,
)
from floodguard.sip.reference_index import index_reference

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

# Auth header lines read for credentials or challenges (list items: fields.MAX_ITEMS).
_MAX_AUTH_VALUES = 8

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
    first, multi, method, uri, status, reason, cseq_num, cseq_method, clen, body, end = (
        index_reference(data, stream))
    return SipMessage(
        first, multi, method, uri, status, reason, cseq_num, cseq_method, clen, body, end
    )
