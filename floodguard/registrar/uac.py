"""A minimal SIP user agent client on top of `floodguard.sip.build`: one user's dialog.

For the tests and benchmarks that need to talk to a registrar with precise control over every
header (replays, foreign nonces, odd expiries) where SIPp scenarios would be clumsy. The
messages themselves are built by `floodguard.sip.build`; this keeps a user's addresses, its
Call-ID and CSeq. It does no I/O itself.
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field

from floodguard.sip import build
from floodguard.sip.message import SipMessage


@dataclass
class Uac:
    """One user registering from `local` (``host:port``) to `server` (``host:port``)."""

    user: str
    password: str
    server: str
    local: str
    transport: str = "UDP"
    domain: str | None = None
    call_id: str = field(default_factory=lambda: secrets.token_hex(8) + "@uac")
    _cseq: itertools.count = field(default_factory=lambda: itertools.count(1))  # type: ignore[type-arg]

    @property
    def uri(self) -> str:
        return f"sip:{self.server}"

    @property
    def host(self) -> str:
        """The AOR's domain: `domain`, or the server's host."""
        return self.domain or self.server.rpartition(":")[0]

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.host}"

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
        return build.register(
            self.server, user=self.user, local=self.local, domain=self.host,
            call_id=call_id or self.call_id,
            cseq=cseq if cseq is not None else next(self._cseq), contacts=contacts,
            expires=expires, authorization=authorization, headers=headers,
            transport=self.transport, tag="uac")

    def authorize(self, challenge: bytes | SipMessage, *, nc: int = 1,
                  password: str | None = None, algorithm: str | None = None) -> str:
        """Credentials for a REGISTER answering `challenge`."""
        return build.authorize(challenge, self.user, password or self.password, "REGISTER",
                               self.uri, nc=nc, algorithm=algorithm)

    def authorize_invite(self, challenge: bytes | SipMessage, callee: str, *,
                         password: str | None = None) -> str:
        """Credentials for an INVITE to `callee` answering `challenge`."""
        return build.authorize(challenge, self.user, password or self.password, "INVITE",
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
        return build.request("INVITE", target, via=self.local, from_uri=self.aor, to_uri=target,
                             call_id=call_id or secrets.token_hex(8) + "@uac", cseq=cseq,
                             transport=self.transport, headers=headers)

    def options(self, target: str | None = None) -> bytes:
        return build.options(target or self.uri, local=self.local, from_uri=self.aor,
                             call_id=secrets.token_hex(8) + "@uac", transport=self.transport,
                             tag="uac")
