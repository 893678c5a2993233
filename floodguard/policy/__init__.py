"""Pure policy decisions (no I/O, time passed in): rate limits, learning from the registrar's
answers, suspension, dynamic blacklist, known-good sources. ``Engine`` ties them together."""

from .escalation import BanRecord
from .engine import (
    Action,
    AuthView,
    Ban,
    ChallengeView,
    Counted,
    Engine,
    MarkKnown,
    SipView,
    Unban,
    Verdict,
)

__all__ = [
    "Action",
    "AuthView",
    "Ban",
    "BanRecord",
    "ChallengeView",
    "Counted",
    "Engine",
    "MarkKnown",
    "SipView",
    "Unban",
    "Verdict",
]
