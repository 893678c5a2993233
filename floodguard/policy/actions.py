"""What the policy engine asks the guard to do besides its verdict: ban or unban a source, mark
it known-good, journal a counted failure. The guard turns them into ipset writes and store rows.
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


Action = Ban | Unban | MarkKnown | Counted
