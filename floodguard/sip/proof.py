"""Proof of receipt: a token only the real source of a UDP REGISTER can hold.

A registrar's nonce is no proof of address: Kamailio's stock auth module and Asterisk PJSIP
give every client challenged in the same second the same nonce, so a spoofer can read "the
victim's" nonce from its own challenge. The guard therefore puts its own proof into every
challenge it sees leave over UDP: the digest ``opaque`` parameter, which clients must return
unchanged (RFC 7616 3.3, RFC 3261 22.4) and which is not part of the digest hash. The token is
an HMAC over the client's address (its IPv6 prefix), the challenge's nonce and the registrar's
own ``opaque``, which rides along inside the token and is put back before the REGISTER reaches
the registrar. Only a host that receives packets at that address can present it.

Pure functions over SIP bytes that have already passed ``parse_message`` (so no control bytes
and one reading of every line); anything unusual (folded auth lines, several challenges in one
line, an over-long opaque) is left alone: such a challenge simply proves nothing.
"""

from __future__ import annotations

import base64
import hmac
import re

PREFIX = b"fg1."
MAX_OPAQUE = 512
_MAC_LEN = 16
_NO_OPAQUE = b"-"

# Header fields, looked for in the lower-cased header block (the start line is never one: a
# field follows a line end).
_CHALLENGE_NAMES = (b"\nwww-authenticate", b"\nproxy-authenticate")
_CREDENTIAL_NAMES = (b"\nauthorization", b"\nproxy-authorization")
# A Digest value that is one simple list of auth-params (RFC 7616: token = token /
# quoted-string, separated by commas), checked whole in one call; then its items in one call.
# (quoted strings unrolled: the regex engine stays on its fast paths)
_PARAM = rb'[!#$%&\'*+.^_`|~0-9A-Za-z-]+[ \t]*=[ \t]*(?:"[^"\\]*(?:\\.[^"\\]*)*"|[^ \t,"]*)'
_DIGEST_LIST = re.compile(
    rb"[ \t]*digest[ \t]+" + _PARAM + rb"(?:[ \t]*,[ \t]*" + _PARAM + rb")*[ \t]*",
    re.IGNORECASE)
_ITEM = re.compile(
    rb'([!#$%&\'*+.^_`|~0-9A-Za-z-]+)[ \t]*=[ \t]*("[^"\\]*(?:\\.[^"\\]*)*"|[^ \t,"]*)')
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_UNESCAPE = re.compile(rb"\\(.)")
# A token as it stands in a request, for a check before any parsing.
_TOKEN = re.compile(rb"fg1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_=-]+")


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


def _unquote(value: bytes) -> bytes:
    if len(value) >= 2 and value[:1] == b'"' and value[-1:] == b'"':
        return _UNESCAPE.sub(rb"\1", value[1:-1])
    return value


class ProofKey:
    """Mints and checks tokens with one secret (shared by every worker, kept across restarts)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("proof key must be at least 16 bytes")
        self._key = key

    def _mac(self, client: str, nonce: bytes, original: bytes) -> bytes:
        material = client.encode() + b"\0" + nonce + b"\0" + original
        return hmac.digest(self._key, material, "sha256")[:_MAC_LEN]

    def mint(self, client: str, nonce: bytes, original: bytes | None) -> bytes:
        """The opaque value for a challenge with ``nonce`` sent to ``client``; ``original`` is
        the registrar's own opaque item value as sent (quotes included), or None."""
        raw = _NO_OPAQUE if original is None else _b64(original)
        return PREFIX + _b64(self._mac(client, nonce, raw)) + b"." + raw

    def check(self, client: str, nonce: bytes, token: bytes) -> tuple[bool, bytes | None]:
        """(valid, the registrar's original opaque or None) for a returned opaque value."""
        if not token.startswith(PREFIX):
            return False, None
        mac_text, dot, raw = token[len(PREFIX):].partition(b".")
        if not dot:
            return False, None
        try:
            mac = _unb64(mac_text)
            original = None if raw == _NO_OPAQUE else _unb64(raw)
        except ValueError:
            return False, None
        if not hmac.compare_digest(mac, self._mac(client, nonce, raw)):
            return False, None
        return True, original


# may_prove(): no valid token / a valid one, credentials to be parsed and rewritten / a valid
# one standing alone with nothing of the registrar's inside: proven as it is.
NO_PROOF, CHECK, PROVEN = 0, 1, 2


def may_prove(data: bytes, client: str, nonce: str | None, key: ProofKey) -> int:
    """A cheap first look at a request: does it carry a valid token for client and nonce? Only
    then is it worth parsing (check_credentials); a flood of bogus or foreign tokens costs a
    search and one HMAC each. PROVEN when the token is valid, holds no opaque of the
    registrar's and the request has one credentials field: nothing to check or put back."""
    if not nonce:
        return NO_PROOF
    at = data.find(PREFIX)
    while at >= 0:  # each place that looks like a token; a real one is a whole opaque value
        found = _TOKEN.match(data, at)
        if found is not None and key.check(client, nonce.encode(), found.group())[0]:
            low = data.lower()
            fields = low.count(b"\nauthorization") + low.count(b"\nproxy-authorization")
            alone = fields == 1 and data.count(PREFIX) == 1
            return PROVEN if alone and found.group().endswith(b"." + _NO_OPAQUE) else CHECK
        at = data.find(PREFIX, at + 1)
    return NO_PROOF


def _items(value: bytes) -> list[tuple[bytes, bytes]] | None:
    """The auth-params of a Digest header value, or None when it is not one simple list."""
    if _DIGEST_LIST.fullmatch(value) is None:
        return None
    start = value.lower().index(b"digest") + 6
    return _ITEM.findall(value, start)


def _fields(sip: bytes, limit: int, names: tuple[bytes, ...]) -> list[tuple[int, int, int]]:
    """(field start, value start, value end) of every header field with one of these names
    (each written as "\\nname"), in order; the value ends before its line end."""
    low = sip[:limit].lower()
    out = []
    for name in names:
        at = low.find(name)
        while at >= 0:
            pos = at + len(name)
            while low[pos:pos + 1] in (b" ", b"\t"):
                pos += 1
            if low[pos:pos + 1] == b":":
                pos += 1
                while low[pos:pos + 1] in (b" ", b"\t"):
                    pos += 1
                end = low.find(b"\n", pos)
                end = limit if end < 0 else end
                if end > pos and low[end - 1:end] == b"\r":
                    end -= 1
                out.append((at + 1, pos, end))
            at = low.find(name, at + 1)
    return sorted(out)


def _join(items: list[tuple[bytes, bytes]]) -> bytes:
    return b"Digest " + b", ".join(name + b"=" + value for name, value in items)


def _header_end(sip: bytes) -> int | None:
    """Where the header block ends (the blank line's end), or None."""
    end_crlf = sip.find(b"\r\n\r\n")
    if end_crlf >= 0 and sip.find(b"\n\n", 0, end_crlf) < 0 and (
            sip.find(b"\n\r\n", 0, end_crlf) < 0):
        return end_crlf + 4  # the usual case, without the regex
    end = _HEADER_END.search(sip)
    return None if end is None else end.end()


def _line_end(sip: bytes, pos: int, limit: int) -> int:
    """The end of the header field starting at pos, its continuation lines included."""
    while True:
        nl = sip.find(b"\n", pos, limit)
        if nl < 0:
            return limit
        if sip[nl + 1:nl + 2] not in (b" ", b"\t"):
            return nl + 1
        pos = nl + 1


def _rebuild(sip: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    out, last = [], 0
    for start, end, text in edits:
        out += [sip[last:start], text]
        last = end
    out.append(sip[last:])
    return b"".join(out)


def tokenise(sip: bytes, client: str, key: ProofKey) -> bytes | None:
    """The challenge response ``sip`` with a token in each Digest challenge sent to ``client``,
    or None when no challenge could carry one."""
    limit = _header_end(sip)
    if limit is None:
        return None
    edits: list[tuple[int, int, bytes]] = []
    for start, vstart, vend in _fields(sip, limit, _CHALLENGE_NAMES):
        if _line_end(sip, start, limit) != sip.find(b"\n", vend, limit) + 1:
            continue  # folded: proves nothing, left as it is
        value = sip[vstart:vend].rstrip(b" \t")
        items = _items(value)
        if items is None:
            continue
        names = [n.lower() for n, _ in items]
        if names.count(b"nonce") != 1 or names.count(b"opaque") > 1:
            continue
        nonce = _unquote(items[names.index(b"nonce")][1])
        original = items[names.index(b"opaque")][1] if b"opaque" in names else None
        if original is not None and len(original) > MAX_OPAQUE:
            continue
        token = b'"' + key.mint(client, nonce, original) + b'"'
        if original is None:
            items.append((b"opaque", token))
        else:
            items[names.index(b"opaque")] = (items[names.index(b"opaque")][0], token)
        edits.append((vstart, vstart + len(value), _join(items)))
    return _rebuild(sip, edits) if edits else None


def check_credentials(sip: bytes, client: str, key: ProofKey) -> tuple[bool, bytes | None]:
    """(proven, new bytes) for a request from ``client`` carrying credentials.

    Proven: every Authorization/Proxy-Authorization answers a challenge that was sent to this
    client; the registrar's own opaque is put back (new bytes; None when the registrar sent
    none: the token then stays, a registrar does not check an opaque it never issued). Not
    proven: the credentials are taken out (new bytes), so the registrar challenges afresh and
    the guess is never answered. (False, None) when there are no credentials or the message
    cannot be rewritten.
    """
    limit = _header_end(sip)
    if limit is None:
        return False, None
    restore: list[tuple[int, int, bytes]] = []
    strip: list[tuple[int, int, bytes]] = []
    proven = True
    for start, vstart, vend in _fields(sip, limit, _CREDENTIAL_NAMES):
        field_end = _line_end(sip, start, limit)
        strip.append((start, field_end, b""))
        if not proven:
            continue
        folded = field_end != sip.find(b"\n", vend, limit) + 1
        value = sip[vstart:vend].rstrip(b" \t")
        items = None if folded else _items(value)
        names = [] if items is None else [n.lower() for n, _ in items]
        if items is None or names.count(b"nonce") != 1 or names.count(b"opaque") != 1:
            proven = False  # folded or unusual credentials are never proof
            continue
        at = names.index(b"opaque")
        valid, original = key.check(client, _unquote(items[names.index(b"nonce")][1]),
                                    _unquote(items[at][1]))
        if not valid:
            proven = False
            continue
        if original is not None:  # a registrar that sent none checks none: token left in
            items[at] = (items[at][0], original)
            restore.append((vstart, vstart + len(value), _join(items)))
    if not strip:
        return False, None
    if proven:
        return True, _rebuild(sip, restore) if restore else None
    return False, _rebuild(sip, strip)
