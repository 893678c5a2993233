"""What the policy engine asks the guard to do besides its verdict: ban or unban a source, mark
it known-good, journal a counted failure, suspend or lift one endpoint (a source and AOR), mark
a known-good pair, protect an account or lock a shared source down, and end either. The guard
turns them into ipset writes, store rows and events.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Ban:
    """Put ip in the ban set for ``seconds`` (kind "suspend", "blacklist" or "manual")."""

    ip: str
    seconds: int
    reason: str
    kind: str
    aor: str | None = None
    failures: int = 0


@dataclass(frozen=True, slots=True)
class Unban:
    """Take ip out of the ban set."""

    ip: str
    reason: str


@dataclass(frozen=True, slots=True)
class MarkKnown:
    """Put ip in the known-good set for ``seconds``."""

    ip: str
    seconds: int


@dataclass(frozen=True, slots=True)
class Counted:
    """A proven failure of ``aor`` from ip was counted (the guard journals it at once, so a
    crash before the next snapshot cannot hand a guesser a fresh count)."""

    ip: str
    aor: str


@dataclass(frozen=True, slots=True)
class MarkPair:
    """(ip, aor) completed an authenticated registration: a known-good pair for ``seconds``."""

    ip: str
    aor: str
    seconds: int


@dataclass(frozen=True, slots=True)
class SuspendPair:
    """Suspend one endpoint: REGISTERs for ``aor`` from ip are dropped by the guard for
    ``seconds`` (no kernel entry: the address's other AORs pass). ``level``: 1, +1 a repeat."""

    ip: str
    aor: str
    seconds: int
    reason: str
    failures: int = 0
    level: int = 1


@dataclass(frozen=True, slots=True)
class LiftPair:
    """An endpoint suspension is over: ended on time ("expired"), lifted by the operator or by
    the allow list."""

    ip: str
    aor: str
    reason: str


@dataclass(frozen=True, slots=True)
class ProtectAccount:
    """Protect an account: REGISTERs for ``aor`` from any source that is not one of its
    known-good pairs are dropped by the guard for ``seconds``; ``sources``: the distinct
    sources whose proven failures led to it. ``level``: 1, +1 a repeat."""

    aor: str
    seconds: int
    sources: int
    level: int = 1


@dataclass(frozen=True, slots=True)
class LiftAccount:
    """An account protection is over: ended on time ("expired") or lifted by the operator."""

    aor: str
    reason: str


@dataclass(frozen=True, slots=True)
class Lockdown:
    """Lock a shared-capable source down instead of banning it: for ``seconds`` only its
    known-good pairs' REGISTERs pass; ``failures``: the distinct AORs it failed on."""

    ip: str
    seconds: int
    failures: int
    level: int = 1


@dataclass(frozen=True, slots=True)
class LiftLockdown:
    """A lockdown is over: ended on time ("expired"), by the operator or the allow list."""

    ip: str
    reason: str


Action = (Ban | Unban | MarkKnown | Counted | MarkPair | SuspendPair | LiftPair | ProtectAccount
          | LiftAccount | Lockdown | LiftLockdown)
