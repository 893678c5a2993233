"""What the policy engine says about one packet: accept or drop, why, and what to do besides.

A request's verdict also says whether its source was known-good when it was judged, so the guard
reads the known-good table once per packet (the admission meter counts unknown arrivals).
"""

from __future__ import annotations

from dataclasses import dataclass

from .actions import Action


@dataclass(frozen=True, slots=True)
class Verdict:
    """Accept or drop one packet, why, and what to do besides; ``known``: the source was
    known-good when its request was judged (on_request only)."""

    accept: bool
    reason: str
    actions: tuple[Action, ...] = ()
    known: bool = False


def by_known(accept: bool, reason: str) -> tuple[Verdict, Verdict]:
    """The verdict for a request from an unknown source, and from a known-good one (index it
    with ``known``)."""
    return Verdict(accept, reason), Verdict(accept, reason, known=True)


OK = Verdict(True, "ok")
ALLOW = Verdict(True, "allow")
BANNED = Verdict(False, "banned")
SUSPENDED = Verdict(False, "suspended")
BUDGET = Verdict(False, "budget")  # only unknown sources are charged to the budget

# Requests: indexed by whether the source is known-good.
REQ_OK = by_known(True, "ok")
REQ_ALLOW = by_known(True, "allow")
REQ_BANNED = by_known(False, "banned")
REQ_SUSPENDED = by_known(False, "suspended")
REQ_PAIR_SUSPENDED = by_known(False, "suspended:pair")
REQ_PROTECTED = by_known(False, "protected:account")
REQ_LOCKED = by_known(False, "lockdown")
REQ_SCANNER = by_known(False, "scanner")
REQ_RATE_REGISTER = by_known(False, "rate:register")
REQ_RATE_SIP = by_known(False, "rate:sip")

# Ban reasons (Ban.reason / BanRecord.reason for automatic bans).
REASON_CONSECUTIVE = "consecutive-failures"
REASON_SPRAYING = "spraying"
REASON_REPEAT = "repeat-offender"
