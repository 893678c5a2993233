"""Pure policy decisions (no I/O, time passed in): rate limits, learning from the registrar's
answers, suspension, dynamic blacklist, known-good sources. ``Engine`` ties them together."""

from .actions import Action, Ban, Counted, MarkKnown, Unban
from .engine import Engine
from .escalation import BanRecord
from .verdict import Verdict
from .views import AuthView, ChallengeView, SipView

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
