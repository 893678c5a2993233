"""Pure policy decisions (no I/O, time passed in): rate limits, proof-of-address learning,
suspension, dynamic blacklist, known-good sources. ``Engine`` ties them together."""

from .blacklist import BanRecord
from .engine import (
    Action,
    AuthView,
    Ban,
    ChallengeView,
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
    "Engine",
    "MarkKnown",
    "SipView",
    "Unban",
    "Verdict",
]
