"""A minimal SIP user agent client: builds requests and answers digest challenges.

For the lab, benchmarks and tests that need to talk to a registrar with precise control over
every header (replays, foreign nonces, odd expiries) where SIPp scenarios would be clumsy.
It does no I/O itself.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from floodguard.registrar.responses import BRANCH_MAGIC, new_token
from floodguard.sip import digest
from floodguard.sip.message import SipMessage, parse_message


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
    from_tag: str = "uac",
    headers: list[str] | tuple[str, ...] = (),
    body: bytes = b"",
) -> bytes:
    """One request; `via` is the sent-by ``host:port``."""
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/{transport} {via};branch={branch or BRANCH_MAGIC + new_token(6)};rport",
        "Max-Forwards: 70",
        f"From: <{from_uri}>;tag={from_tag}",
        f"To: <{to_uri}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        *headers,
        f"Content-Length: {len(body)}",
        "",
        "",
    ]
    return "\r\n".join(lines).encode() + body


def authorize(
    challenge: bytes | SipMessage,
    user: str,
    password: str,
    method: str,
    uri: str,
    *,
    nc: int = 1,
    algorithm: str | None = None,
) -> str:
    """An Authorization value answering the first challenge (or the one for `algorithm`)."""
    msg = challenge if isinstance(challenge, SipMessage) else parse_message(challenge)
    for option in msg.challenges:
        if algorithm is None or (option.algorithm or "MD5").upper() == algorithm.upper():
            return digest.authorization_header(
                user, password, option.realm or "", option.nonce or "", uri, method,
                algorithm=(option.algorithm or "MD5").upper(), qop="auth", nc=nc,
                opaque=option.opaque,  # returned unchanged, as RFC 7616 requires
            )
    raise ValueError("no matching digest challenge")


@dataclass
class Uac:
    """One user registering from `local` (``host:port``) to `server` (``host:port``)."""

    user: str
    password: str
    server: str
    local: str
    transport: str = "UDP"
    domain: str | None = None
    call_id: str = field(default_factory=lambda: new_token(8) + "@uac")
    _cseq: itertools.count = field(default_factory=lambda: itertools.count(1))  # type: ignore[type-arg]

    @property
    def uri(self) -> str:
        return f"sip:{self.server}"

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.domain or self.server.rpartition(':')[0]}"

    @property
    def contact(self) -> str:
        return f"sip:{self.user}@{self.local}"

    def register(
        self,
        *,
        expires: int | None = 3600,
        contacts: list[str] | None = None,
        authorization: str | None = None,
        headers: list[str] | tuple[str, ...] = (),
        cseq: int | None = None,
        call_id: str | None = None,
    ) -> bytes:
        """A REGISTER; `contacts` are full Contact header values (default: our contact)."""
        lines = [f"Contact: {c}" for c in (contacts if contacts is not None
                                           else [f"<{self.contact}>"])]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if authorization is not None:
            lines.append(f"Authorization: {authorization}")
        lines.extend(headers)
        return request(
            "REGISTER", self.uri, via=self.local, from_uri=self.aor, to_uri=self.aor,
            call_id=call_id or self.call_id, cseq=cseq if cseq is not None else next(self._cseq),
            transport=self.transport, headers=lines,
        )

    def authorize(self, challenge: bytes | SipMessage, *, nc: int = 1,
                  password: str | None = None, algorithm: str | None = None) -> str:
        """Credentials for a REGISTER answering `challenge`."""
        return authorize(challenge, self.user, password or self.password, "REGISTER", self.uri,
                         nc=nc, algorithm=algorithm)

    def authorize_invite(self, challenge: bytes | SipMessage, callee: str, *,
                         password: str | None = None) -> str:
        """Credentials for an INVITE to `callee` answering `challenge`."""
        return authorize(challenge, self.user, password or self.password, "INVITE",
                         self.invite_uri(callee))

    def invite_uri(self, callee: str) -> str:
        return f"sip:{callee}@{self.server}"

    def invite(self, user: str, *, call_id: str | None = None, cseq: int = 1,
               authorization: str | None = None) -> bytes:
        """An INVITE to `user` (no body); `authorization` answers a challenge."""
        target = self.invite_uri(user)
        headers = [f"Contact: <{self.contact}>"]
        if authorization is not None:
            headers.append(f"Authorization: {authorization}")
        return request("INVITE", target, via=self.local, from_uri=self.aor, to_uri=target,
                       call_id=call_id or new_token(8) + "@uac", cseq=cseq,
                       transport=self.transport, headers=headers)

    def options(self, target: str | None = None) -> bytes:
        uri = target or self.uri
        return request("OPTIONS", uri, via=self.local, from_uri=self.aor, to_uri=uri,
                       call_id=new_token(8) + "@uac", cseq=1, transport=self.transport)
