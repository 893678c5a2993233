"""Pure policy decisions (no I/O, time passed in): rate limits, learning from the registrar's
answers, suspension, dynamic blacklist, known-good sources. ``Engine`` ties them together."""

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
from .escalation import BanRecord

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
