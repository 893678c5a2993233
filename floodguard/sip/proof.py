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
import hashlib
import hmac
import re

PREFIX = b"fg1."
MAX_OPAQUE = 512
_MAC_LEN = 16
_NO_OPAQUE = b"-"

_CHALLENGES = (b"www-authenticate", b"proxy-authenticate")
_CREDENTIALS = (b"authorization", b"proxy-authorization")
# One auth parameter (RFC 7616 auth-param): token = token / quoted-string, then "," or the end.
_ITEM = re.compile(
    rb'[ \t]*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[^ \t,"]*)[ \t]*(,|$)')
_SCHEME = re.compile(rb"[ \t]*digest[ \t]+", re.IGNORECASE)
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_UNESCAPE = re.compile(rb"\\(.)")
# A token as it stands in a request, for a check before any parsing.
_TOKEN = re.compile(
    rb'opaque[ \t]*=[ \t]*"?(fg1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_=-]+)', re.IGNORECASE)


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
        return hmac.new(self._key, material, hashlib.sha256).digest()[:_MAC_LEN]

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


def may_prove(data: bytes, client: str, nonce: str | None, key: ProofKey) -> bool:
    """A cheap first look at a request: does it carry a valid token for client and nonce? Only
    then is it worth parsing and rewriting (check_credentials); a flood of bogus or foreign
    tokens costs one regex search and one HMAC each."""
    if not nonce:
        return False
    found = _TOKEN.search(data)
    return found is not None and key.check(client, nonce.encode(), found.group(1))[0]


def _items(value: bytes) -> list[tuple[bytes, bytes]] | None:
    """The auth-params of a Digest header value, or None when it is not one simple list."""
    scheme = _SCHEME.match(value)
    if scheme is None:
        return None
    pos, out = scheme.end(), []
    while pos < len(value):
        m = _ITEM.match(value, pos)
        if m is None or m.end() == pos:
            return None
        out.append((m.group(1), m.group(2)))
        pos = m.end()
        if not m.group(3) and pos < len(value):
            return None
    return out or None


def _join(items: list[tuple[bytes, bytes]]) -> bytes:
    return b"Digest " + b", ".join(name + b"=" + value for name, value in items)


def _split(sip: bytes) -> tuple[list[bytes], bytes] | None:
    """Header lines (terminators kept) and the rest (blank line + body)."""
    end = _HEADER_END.search(sip)
    if end is None:
        return None
    head = sip[:end.start()]
    lines = head.split(b"\n")
    # re-attach the LF each line ended with; the last one ends where the blank line starts
    out = [line + b"\n" for line in lines[:-1]] + [lines[-1]]
    return out, sip[end.start():]


def _name_value(line: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(lower-case name, text up to the value, the value, the line end)."""
    body, cr = (line[:-2], b"\r\n") if line.endswith(b"\r\n") else (
        (line[:-1], b"\n") if line.endswith(b"\n") else (line, b""))
    name, colon, value = body.partition(b":")
    lead = len(value) - len(value.lstrip(b" \t"))
    return name.strip().lower(), name + colon + value[:lead], value[lead:].rstrip(b" \t"), cr


def tokenise(sip: bytes, client: str, key: ProofKey) -> bytes | None:
    """The challenge response ``sip`` with a token in each Digest challenge sent to ``client``,
    or None when no challenge could carry one."""
    split = _split(sip)
    if split is None:
        return None
    lines, rest = split
    changed = False
    for i, line in enumerate(lines):
        if i == 0 or line[:1] in (b" ", b"\t"):
            continue
        name, lead, value, end = _name_value(line)
        if name not in _CHALLENGES:
            continue
        if i + 1 < len(lines) and lines[i + 1][:1] in (b" ", b"\t"):
            continue  # folded: proves nothing, left as it is
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
        lines[i] = lead + _join(items) + end
        changed = True
    return b"".join(lines) + rest if changed else None


def check_credentials(sip: bytes, client: str, key: ProofKey) -> tuple[bool, bytes | None]:
    """(proven, new bytes) for a request from ``client`` carrying credentials.

    Proven: every Authorization/Proxy-Authorization answers a challenge that was sent to this
    client; the registrar's own opaque is put back (new bytes). Not proven: the credentials are
    taken out (new bytes), so the registrar challenges afresh and the guess is never answered.
    (False, None) when there are no credentials or the message cannot be rewritten.
    """
    split = _split(sip)
    if split is None:
        return False, None
    lines, rest = split
    found = proven = False
    keep: list[bytes] = []
    restored: list[bytes] = []
    skipping = False
    all_valid = True
    for i, line in enumerate(lines):
        if i > 0 and line[:1] in (b" ", b"\t"):
            if skipping:
                all_valid = False  # folded credentials are never proof
                continue
            keep.append(line)
            restored.append(line)
            continue
        skipping = False
        name, lead, value, end = _name_value(line) if i else (b"", b"", b"", b"")
        if name not in _CREDENTIALS:
            keep.append(line)
            restored.append(line)
            continue
        found = skipping = True
        items = _items(value)
        if items is None:
            all_valid = False
            continue
        names = [n.lower() for n, _ in items]
        if names.count(b"nonce") != 1 or names.count(b"opaque") != 1:
            all_valid = False
            continue
        nonce = _unquote(items[names.index(b"nonce")][1])
        at = names.index(b"opaque")
        valid, original = key.check(client, nonce, _unquote(items[at][1]))
        if not valid:
            all_valid = False
            continue
        if original is None:
            del items[at]
        else:
            items[at] = (items[at][0], original)
        restored.append(lead + _join(items) + end)
    if not found:
        return False, None
    proven = all_valid
    out = restored if proven else keep
    return proven, b"".join(out) + rest
