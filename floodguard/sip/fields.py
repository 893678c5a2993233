"""SIP header values, parsed on demand: name-addr, parameters, URIs, contacts, digest
credentials and challenges (RFC 3261 §20, §22, §25).

Tolerant by design: a malformed value yields None, an empty tuple or what could be read, never
an exception. Every list is capped (`MAX_ITEMS`), so crafted input cannot cost much more per
byte than a normal message. `floodguard.sip.message.SipMessage` calls these on first access.
"""

import re
from itertools import islice, product
from typing import NamedTuple

from floodguard.sip._index import auth_params

MAX_UINT_DIGITS = 10
MAX_ITEMS = 64

_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)
# The quoted-string loop is unrolled and whitespace spelled [ \t] rather than \s: both keep
# the regex engine on its fast paths.  Unterminated quotes and brackets run to the end.
# One list element: any run of quoted strings, <...> sections and non-separator characters.
_QUOTED = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?')
COMMA_ITEMS = re.compile(r'(?:"[^"\\]*(?:\\.[^"\\]*)*"?|<[^>]*>?|[^,"<]+)+')
_SEMI_ITEMS = re.compile(r'(?:"[^"\\]*(?:\\.[^"\\]*)*"?|<[^>]*>?|[^;"<]+)+')
# An auth item: a bare token (a scheme) or name=value with a quoted or plain value.
# Groups: name, "=", quoted content, plain value.
_AUTH_ITEM = re.compile(
    r'([^ \t=,"]+)[ \t]*(?:(=)[ \t]*(?:"([^"\\]*(?:\\.[^"\\]*)*)"?|([^ \t,"]*)))?'
)
# The same without the escape handling, for values without a backslash (almost all): the
# simpler quoted-string loop makes findall about a quarter cheaper.
_AUTH_ITEM_PLAIN = re.compile(r'([^ \t=,"]+)[ \t]*(?:(=)[ \t]*(?:"([^"]*)"?|([^ \t,"]*)))?')


# NamedTuples rather than frozen dataclasses: immutable and about five times cheaper to build.
class Contact(NamedTuple):
    """One Contact entry; `star` is True for `Contact: *` (then `uri` is "*")."""

    uri: str
    expires: int | None
    star: bool
    raw: str
    params: dict[str, str] = {}


class DigestCredentials(NamedTuple):
    """Credentials from an Authorization or Proxy-Authorization header."""

    scheme: str
    username: str | None = None
    realm: str | None = None
    nonce: str | None = None
    uri: str | None = None
    response: str | None = None
    algorithm: str | None = None
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    params: dict[str, str] = {}


class DigestChallenge(NamedTuple):
    """One challenge from a WWW-Authenticate or Proxy-Authenticate header."""

    scheme: str
    realm: str | None = None
    nonce: str | None = None
    algorithm: str | None = None
    qop: str | None = None
    stale: bool = False
    opaque: str | None = None
    params: dict[str, str] = {}



# NamedTuple's generated __new__ is a Python function around this; calling it directly with
# every field given skips that frame on the per-packet paths.
_tuple_new = tuple.__new__


def _case_variants(*words: str) -> frozenset[str]:
    return frozenset(
        "".join(chars)
        for word in words
        for chars in product(*({c.lower(), c.upper()} for c in word))
    )


# "sip:", "tel:" and "sips:" in every mix of case, for a URI scheme test without a regex.
_SCHEMES4 = _case_variants("sip:", "tel:")
_SCHEMES5 = _case_variants("sips:")
Party = tuple[str | None, str | None, str | None, str | None]


def decode_value(value: bytes) -> str:
    return value.strip().decode("utf-8", "replace")


def to_uint(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if value.isdigit() and value.isascii() and len(value) <= MAX_UINT_DIGITS:
        return int(value)
    return None


def _unquote(value: str) -> str:
    if value[:1] != '"':
        return value
    value = value[1:-1] if len(value) >= 2 and value[-1] == '"' else value[1:]
    if "\\" in value:
        value = _UNESCAPE.sub(r"\1", value)
    return value


def _split_name_addr(value: str) -> tuple[str, str]:
    """Split `"Name" <uri>;params` or `uri;params` into (uri, header-params string)."""
    value = value.strip()
    if value[:1] == '"':
        if "\\" in value:
            quoted = _QUOTED.match(value)
            end = quoted.end() if quoted else 0
        else:  # no escapes: the display name ends at the next quote (or runs to the end)
            end = value.find('"', 1) + 1 or len(value)
        lt = value.find("<", end)
    else:
        lt = value.find("<")
        # A token display-name holds no ';' or '"': then the '<' is inside a parameter.
        if lt > 0 and (value.find(";", 0, lt) >= 0 or value.find('"', 0, lt) >= 0):
            lt = -1
    if lt >= 0:
        gt = value.find(">", lt + 1)
        if gt < 0:
            return value[lt + 1 :].strip(), ""
        return value[lt + 1 : gt].strip(), value[gt + 1 :]
    # addr-spec without brackets: every ;param belongs to the header, not the URI.
    uri, _, params = value.partition(";")
    return uri.strip(), params


def parse_params(text: str) -> dict[str, str]:
    """Parse `;a=b;c="d;e";flag` into a dict with lower-cased names (first one wins)."""
    out: dict[str, str] = {}
    if not text:
        return out
    if '"' in text:
        items = [m.group() for m in islice(_SEMI_ITEMS.finditer(text), MAX_ITEMS)]
    else:
        items = text.split(";", MAX_ITEMS)
    for item in items:
        name, _, value = item.partition("=")
        name = name.strip().lower()
        if name and name not in out:
            value = value.strip()
            out[name] = _unquote(value) if value[:1] == '"' else value
    return out


def _uri_user_host(uri: str) -> tuple[str | None, str | None]:
    """(user, lower-cased host without port) of a SIP/SIPS/TEL URI; tolerant of junk.

    [scheme:][userinfo@]host with string operations (a regex costs several times more): an
    optional sip/sips/tel scheme, userinfo up to the first "@", then the host: an IPv6
    reference, or everything up to a port, parameter or header part.
    """
    if uri[:4] in _SCHEMES4:
        rest = uri[4:]
    elif uri[:5] in _SCHEMES5:
        rest = uri[5:]
    else:
        rest = uri
    userinfo, at, host = rest.partition("@")
    if not at:
        host = rest
        userinfo = ""
    close = host.find("]") if host[:1] == "[" else -1
    if close >= 0:
        host = host[: close + 1]
    else:
        host = host.partition(":")[0].partition(";")[0].partition("?")[0]
    user = userinfo.partition(":")[0] or None if userinfo else None
    return user, host.strip().lower() or None


def parse_party(value: str | None) -> Party:
    """(uri, user, host, tag) of a From/To header value."""
    if not value:
        return (None, None, None, None)
    uri, params = _split_name_addr(value)
    if not uri:
        return (None, None, None, None)
    user, host = _uri_user_host(uri)
    tag = parse_params(params).get("tag") if params else None
    return (uri, user, host, tag)


def parse_contacts(values: list[str]) -> tuple[Contact, ...]:
    out: list[Contact] = []
    for value in values:
        if "," in value:
            items = [m.group() for m in islice(COMMA_ITEMS.finditer(value), MAX_ITEMS)]
        else:
            items = [value]
        for item in items:
            if len(out) >= MAX_ITEMS:
                return tuple(out)
            raw = item.strip()
            if not raw:
                continue
            if raw == "*":
                out.append(Contact("*", None, True, raw, {}))
                continue
            uri, param_text = _split_name_addr(raw)
            params = parse_params(param_text)
            out.append(
                _tuple_new(Contact, (uri, to_uint(params.get("expires")), False, raw, params))
            )
    return tuple(out)


def parse_auth_value(value: str) -> list[tuple[str, dict[str, str]]]:
    """Split an auth header value into (scheme, params) pairs; a bare token starts a new one."""
    result: list[tuple[str, dict[str, str]]] = []
    scheme = ""
    params: dict[str, str] = {}
    escaped = "\\" in value
    pattern = _AUTH_ITEM if escaped else _AUTH_ITEM_PLAIN
    if len(value) <= 1024:
        items = pattern.findall(value)[:MAX_ITEMS]
    else:
        # findall would build every item of a huge crafted value before the cap applies.
        items = [m.groups("") for m in islice(pattern.finditer(value), MAX_ITEMS)]
    for name, eq, quoted, plain in items:
        if not eq:
            if scheme or params:
                result.append((scheme, params))
            scheme, params = name, {}
            continue
        key = name.lower()
        if key not in params:
            if escaped and "\\" in quoted:
                quoted = _UNESCAPE.sub(r"\1", quoted)
            params[key] = quoted or plain
    if scheme or params:
        result.append((scheme, params))
    return result


_CREDENTIAL_FIELDS = DigestCredentials._fields[1:-1]


def _auth_pairs(raw: bytes) -> list[tuple[str, dict[str, str]]]:
    """parse_auth_value of a raw header value; the C split where it answers (plain ASCII)."""
    pairs = auth_params(raw)
    return parse_auth_value(decode_value(raw)) if pairs is None else pairs


def parse_credentials(*groups: list[bytes]) -> DigestCredentials | None:
    first: DigestCredentials | None = None
    for values in groups:
        for value in values:
            for scheme, p in _auth_pairs(value):
                creds = _tuple_new(DigestCredentials, (scheme, *map(p.get, _CREDENTIAL_FIELDS), p))
                if scheme.lower() == "digest":
                    return creds
                if first is None:
                    first = creds
    return first


def parse_challenges(values: list[bytes]) -> tuple[DigestChallenge, ...]:
    out: list[DigestChallenge] = []
    for value in values:
        for scheme, p in _auth_pairs(value):
            out.append(
                _tuple_new(DigestChallenge, (
                    scheme,
                    p.get("realm"),
                    p.get("nonce"),
                    p.get("algorithm"),
                    p.get("qop"),
                    p.get("stale", "").lower() == "true",
                    p.get("opaque"),
                    p,
                ))
            )
    return tuple(out)
