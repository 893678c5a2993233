"""Requests other than REGISTER: a redirect server for INVITE, OPTIONS, and the rest.

INVITE to an online AOR gets 302 with its contacts (no media, no proxying), an AOR whose
bindings are all offline (or that has none) gets 480 at once, an unknown AOR 404; the core asks
`invite` only for a caller that authenticated (see core.py). OPTIONS to the
registrar gets 200 with Allow. ACK is swallowed; CANCEL and BYE get 481 because a redirect server
keeps no transactions or dialogs to cancel or end; anything else gets 405 with Allow.
"""

from __future__ import annotations

from floodguard.registrar.bindings import BindingTable
from floodguard.registrar.responses import ALLOW, uri_scheme_ok, uri_user

Reply = tuple[int, str | None, list[str]]


def invite(request_uri: str | None, table: BindingTable, known: bool, now: float) -> Reply:
    """Where to redirect an INVITE; `known` says whether the AOR's account exists."""
    if not uri_scheme_ok(request_uri):
        return 416, None, []
    user = uri_user(request_uri)
    if user is None or not known:
        return 404, None, []
    bindings = table.active(user, now)
    online = [b for b in bindings if b.online]
    if not online:
        return 480, None, []
    online.sort(key=lambda b: b.registered_at, reverse=True)
    return 302, None, [f"Contact: <{b.contact}>" for b in online]


def options() -> Reply:
    return 200, None, [f"Allow: {ALLOW}", "Accept: application/sdp"]


def other(method: str) -> Reply | None:
    """Answer for a method that is neither REGISTER, INVITE nor OPTIONS (None: no answer)."""
    if method == "ACK":
        return None
    if method in ("CANCEL", "BYE"):
        return 481, None, []
    return 405, None, [f"Allow: {ALLOW}"]
