"""SIP requests and responses as the lab's phones and attackers write them, and lab accounts.

The lab's accounts are generated: phone ``i`` is user ``10000 + i`` with password
``lab<user>pw``; the attackers own one valid account of their own (``ATTACKER_USER``), which the
hijack scenario uses to try to overwrite a victim's binding with real credentials.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

FIRST_USER = 10000
ATTACKER_USER = "9999"
ATTACKER_PASSWORD = "attacker-own-password"
PHONE_AGENT = "Yealink SIP-T46S 66.86.0.15"
SIP_PORT = 5060
REALM = "floodguard-lab"


def phone_user(index: int) -> str:
    """The account of phone ``index``."""
    return str(FIRST_USER + index)


def password(user: str) -> str:
    """The password of a lab account (the attacker's own account included)."""
    return ATTACKER_PASSWORD if user == ATTACKER_USER else f"lab{user}pw"


def accounts_toml(users: Iterable[str]) -> str:
    """An accounts file for floodguard's registrar: the given users plus the attacker's own."""
    out = []
    for user in [*users, ATTACKER_USER]:
        out.append(f'[[account]]\nuser = "{user}"\npassword = "{password(user)}"\n')
    return "\n".join(out)


def branch() -> str:
    """A fresh RFC 3261 branch."""
    return "z9hG4bK" + secrets.token_hex(8)


def register(
    *,
    server: str,
    src: str,
    sport: int,
    user: str,
    call_id: str,
    cseq: int,
    expires: int = 60,
    contact: str | None = None,
    authorization: str | None = None,
    user_agent: str = PHONE_AGENT,
    tag: str | None = None,
    via_branch: str | None = None,
    extra: Iterable[str] = (),
    aor_user: str | None = None,
) -> bytes:
    """A REGISTER for ``aor_user`` (default ``user``) with its Contact at ``src:sport``."""
    aor = aor_user or user
    lines = [
        f"REGISTER sip:{server} SIP/2.0",
        f"Via: SIP/2.0/UDP {src}:{sport};rport;branch={via_branch or branch()}",
        "Max-Forwards: 70",
        f"From: <sip:{aor}@{server}>;tag={tag or secrets.token_hex(4)}",
        f"To: <sip:{aor}@{server}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: {contact or f'<sip:{user}@{src}:{sport}>'}",
        f"Expires: {expires}",
        f"User-Agent: {user_agent}",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    lines.extend(extra)
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def options(*, server: str, src: str, sport: int, user: str, user_agent: str,
            call_id: str | None = None) -> bytes:
    """An OPTIONS probe, as scanners send them."""
    lines = [
        f"OPTIONS sip:{user}@{server} SIP/2.0",
        f"Via: SIP/2.0/UDP {src}:{sport};rport;branch={branch()}",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{server}>;tag={secrets.token_hex(4)}",
        f"To: <sip:{user}@{server}>",
        f"Call-ID: {call_id or secrets.token_hex(8)}",
        "CSeq: 1 OPTIONS",
        f"Contact: <sip:{user}@{src}:{sport}>",
        f"User-Agent: {user_agent}",
        "Accept: application/sdp",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def reply_200(request: bytes) -> bytes | None:
    """A 200 OK echoing a request's Via, From, To, Call-ID and CSeq (how a phone answers
    OPTIONS); None when those headers are not there."""
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    keep = []
    for line in head[1:]:
        name = line.split(b":", 1)[0].strip().lower()
        if name in (b"via", b"v", b"from", b"f", b"to", b"t", b"call-id", b"i", b"cseq"):
            keep.append(line)
    if len(keep) < 5:
        return None
    return (b"SIP/2.0 200 OK\r\n" + b"\r\n".join(keep)
            + b"\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\nContent-Length: 0\r\n\r\n")
