"""What the policy engine reads of a SIP message: the parsed fields it needs, as protocols.

The guard passes its parser's message (floodguard.sip.message) and tests pass small stand-ins;
the engine depends on nothing else of a message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class AuthView(Protocol):
    """The Authorization (or Proxy-Authorization) header of a request."""

    @property
    def username(self) -> str | None: ...

    @property
    def nonce(self) -> str | None: ...


class ChallengeView(Protocol):
    """One WWW-Authenticate/Proxy-Authenticate challenge of a 401/407."""

    @property
    def nonce(self) -> str | None: ...

    @property
    def stale(self) -> bool: ...


class SipView(Protocol):
    """The parsed SIP message, as far as the policy needs it."""

    @property
    def is_request(self) -> bool: ...

    @property
    def method(self) -> str | None: ...

    @property
    def status(self) -> int | None: ...

    @property
    def call_id(self) -> str | None: ...

    @property
    def cseq_num(self) -> int | None: ...

    @property
    def cseq_method(self) -> str | None: ...

    @property
    def aor(self) -> str | None: ...

    @property
    def user_agent(self) -> str | None: ...

    @property
    def authorization(self) -> AuthView | None: ...

    @property
    def challenges(self) -> Sequence[ChallengeView]: ...

    @property
    def granted_expires(self) -> int | None: ...
