"""SIP messages as text: requests (REGISTER, OPTIONS, any method), replies, digest answers.

The one place where the lab, the tests and the benchmarks write SIP: every request has the same
shape (request line, Via, Max-Forwards, From, To, Call-ID, CSeq, then Contact, Expires,
User-Agent, Authorization, any other headers, Content-Length), with keyword options for what
differs between callers (transport, branch, rport, tags, contacts, user agent, credentials,
extra headers). Answering a challenge picks it from a 401/407 and computes the credentials with
`floodguard.sip.digest`. Pure: no I/O, nothing from the registrar; hosts are written as given
(`hostport` brackets an IPv6 address for a URI or a Via).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence

from floodguard.sip import digest
from floodguard.sip.message import DigestChallenge, SipMessage, parse_message

__all__ = [
    "BRANCH_MAGIC",
    "answer",
    "authorize",
    "challenge_of",
    "hostport",
    "new_branch",
    "options",
    "register",
    "reply",
    "request",
    "response",
]

BRANCH_MAGIC = "z9hG4bK"
REASONS = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           407: "Proxy Authentication Required", 423: "Interval Too Brief"}
# The headers a reply copies from its request (long and compact names).
_ECHOED = (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq")


def new_branch() -> str:
    """A fresh RFC 3261 branch."""
    return BRANCH_MAGIC + secrets.token_hex(8)


def hostport(host: str, port: int | None = None) -> str:
    """A host (IPv6 in brackets) with its port, as a SIP URI or a Via writes it."""
    text = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return text if port is None else f"{text}:{port}"


def _message(first: str, lines: Iterable[str], body: bytes = b"") -> bytes:
    return "\r\n".join([first, *lines, f"Content-Length: {len(body)}", "", ""]).encode() + body


def request(
    method: str,
    uri: str,
    *,
    via: str,
    from_uri: str,
    to_uri: str,
    call_id: str,
    cseq: int,
    transport: str = "UDP",
    branch: str | None = None,
    rport: bool = True,
    from_tag: str = "uac",
    display: str | None = None,
    headers: Iterable[str] = (),
    body: bytes = b"",
) -> bytes:
    """One request; `via` is the sent-by ``host:port``, its Via ``;branch=…`` then ``;rport``
    (unless `rport` is false); `display` is a quoted display name in From and To."""
    name = f'"{display}" ' if display is not None else ""
    top = f"SIP/2.0/{transport.upper()} {via};branch={branch or new_branch()}"
    return _message(f"{method} {uri} SIP/2.0", [
        f"Via: {top};rport" if rport else f"Via: {top}",
        "Max-Forwards: 70",
        f"From: {name}<{from_uri}>;tag={from_tag}",
        f"To: {name}<{to_uri}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        *headers,
    ], body)


def _fields(contacts: Iterable[str], expires: int | None, user_agent: str | None,
            authorization: str | None, headers: Iterable[str]) -> list[str]:
    """The header lines after CSeq, in this order; None leaves a header out."""
    lines = [f"Contact: {c}" for c in contacts]
    for name, value in (("Expires", expires), ("User-Agent", user_agent),
                        ("Authorization", authorization)):
        if value is not None:
            lines.append(f"{name}: {value}")
    lines.extend(headers)
    return lines


def register(
    server: str,
    *,
    user: str,
    local: str,
    call_id: str,
    cseq: int,
    domain: str | None = None,
    aor_user: str | None = None,
    uri: str | None = None,
    method: str = "REGISTER",
    contacts: Sequence[str] | None = None,
    expires: int | None = 3600,
    user_agent: str | None = None,
    authorization: str | None = None,
    headers: Iterable[str] = (),
    transport: str = "UDP",
    branch: str | None = None,
    rport: bool = True,
    tag: str | None = None,
    display: str | None = None,
) -> bytes:
    """A REGISTER to `server` (``host[:port]`` of the request URI) for ``sip:aor_user@domain``
    (defaults: `user` at `server`) sent from `local` (``host:port``).

    `contacts` are whole Contact values (default ``<sip:user@local>``; empty: no Contact);
    `expires` None leaves the Expires header out; `tag` defaults to a random From tag;
    `method` may be written in any letter case, `uri` replaces ``sip:server``.
    """
    aor = f"sip:{aor_user or user}@{domain or server}"
    lines = _fields(contacts if contacts is not None else [f"<sip:{user}@{local}>"],
                    expires, user_agent, authorization, headers)
    return request(method, uri or f"sip:{server}", via=local, from_uri=aor, to_uri=aor,
                   call_id=call_id, cseq=cseq, transport=transport, branch=branch, rport=rport,
                   from_tag=tag or secrets.token_hex(4), display=display, headers=lines)


def options(
    uri: str,
    *,
    local: str,
    from_uri: str | None = None,
    call_id: str | None = None,
    cseq: int = 1,
    contact: str | None = None,
    user_agent: str | None = None,
    headers: Iterable[str] = (),
    transport: str = "UDP",
    branch: str | None = None,
    rport: bool = True,
    tag: str | None = None,
) -> bytes:
    """An OPTIONS to `uri` from `local` (``host:port``); From is `uri` unless given, as
    scanners and liveness probes send them."""
    lines = _fields([] if contact is None else [contact], None, user_agent, None, headers)
    return request("OPTIONS", uri, via=local, from_uri=from_uri or uri, to_uri=uri,
                   call_id=call_id or secrets.token_hex(8), cseq=cseq, transport=transport,
                   branch=branch, rport=rport, from_tag=tag or secrets.token_hex(4),
                   headers=lines)


def response(
    status: int,
    *,
    via: str,
    from_: str,
    to: str,
    call_id: str,
    cseq: int,
    method: str = "REGISTER",
    reason: str | None = None,
    headers: Iterable[str] = (),
) -> bytes:
    """A response from its parts: `via`, `from_` and `to` are whole header values."""
    return _message(f"SIP/2.0 {status} {reason or REASONS.get(status, 'Unknown')}", [
        f"Via: {via}", f"From: {from_}", f"To: {to}", f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}", *headers])


def reply(request: bytes, status: int = 200, reason: str | None = None,
          headers: Iterable[str] = ()) -> bytes | None:
    """A response echoing a request's Via, From, To, Call-ID and CSeq lines as they stand (how
    a phone answers OPTIONS); None when the request lacks any of them."""
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    keep = [line for line in head[1:] if line.split(b":", 1)[0].strip().lower() in _ECHOED]
    if len(keep) < 5:
        return None
    first = f"SIP/2.0 {status} {reason or REASONS.get(status, 'Unknown')}".encode()
    tail = [h.encode() for h in headers]
    return b"\r\n".join([first, *keep, *tail, b"Content-Length: 0", b"", b""])


def challenge_of(msg: bytes | SipMessage, algorithm: str | None = None) -> DigestChallenge | None:
    """The first challenge in a 401/407 that carries a nonce (for `algorithm` if given)."""
    parsed = msg if isinstance(msg, SipMessage) else parse_message(msg)
    for option in parsed.challenges:
        if option.nonce and (algorithm is None
                             or (option.algorithm or "MD5").upper() == algorithm.upper()):
            return option
    return None


def answer(
    challenge: DigestChallenge,
    user: str,
    password: str,
    method: str,
    uri: str,
    *,
    nc: int = 1,
    nonce: str | None = None,
    cnonce: str | None = None,
) -> str:
    """An Authorization value answering `challenge`: its realm, nonce (or `nonce`, to forge
    one) and algorithm (MD5 when digest.py cannot compute it), qop "auth" when it offers a
    qop, and its opaque returned unchanged (RFC 7616)."""
    algorithm = (challenge.algorithm or "MD5").upper()
    return digest.authorization_header(
        user, password, challenge.realm or "", nonce or challenge.nonce or "", uri, method,
        algorithm=algorithm if algorithm in digest.ALGORITHMS else "MD5",
        qop="auth" if challenge.qop else None, nc=nc, cnonce=cnonce, opaque=challenge.opaque)


def authorize(
    msg: bytes | SipMessage,
    user: str,
    password: str,
    method: str,
    uri: str,
    *,
    nc: int = 1,
    algorithm: str | None = None,
) -> str:
    """An Authorization value answering the first challenge in `msg` (or the one for
    `algorithm`); ValueError when there is none."""
    option = challenge_of(msg, algorithm)
    if option is None:
        raise ValueError("no matching digest challenge")
    return answer(option, user, password, method, uri, nc=nc)
