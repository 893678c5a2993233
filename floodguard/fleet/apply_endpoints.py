"""Applying the fleet's endpoint changes (fleet/endpoints.py) to this node: the store (not
journalled, so nothing is echoed back), the events, and the guard workers, told through the
command queue so their engines hold the same pairs, suspensions and holds.

A lockdown from another node is enforced here by the guard alone: the kernel pass set needs the
UDP ports this node saw its phones answered on, which it may never have seen.
"""

from __future__ import annotations

from typing import Any

from floodguard.enforce import Enforcer
from floodguard.store import HOLD_ACCOUNT, Store

# a change no longer than this (seconds) is not worth applying: it ends in transit
MIN_LEFT = 1.0


def apply_endpoints(store: Store, enforce: Enforcer, changes: dict[str, dict[str, Any]],
                    now: float) -> tuple[list[str], int]:
    """Apply the latest change per endpoint key; returns (keys applied, skipped)."""
    applied: list[str] = []
    skipped = 0
    pairs: list[tuple[str, str, float]] = []
    commands: list[tuple[str, str, float | None, str | None]] = []
    for key, change in changes.items():
        op = change["op"]
        if op in ("resume", "release"):
            done = _lift(store, enforce, change, commands)
        elif change["until"] <= now + MIN_LEFT:
            done = False  # expired, or about to
        elif op == "pair":
            here = store.endpoint_span("pair", change["ip"], change["aor"])
            done = here is None or here[1] < change["until"] - 1
            if done:
                pairs.append((change["ip"], change["aor"], change["until"]))
                commands.append(("pair", change["ip"], change["until"] - now, change["aor"]))
        elif op == "suspend":
            done = _suspend(store, enforce, change, now, commands)
        else:
            done = _hold(store, enforce, change, now, commands)
        if done:
            applied.append(key)
        else:
            skipped += 1
    if pairs:
        store.put_known_pairs(pairs, journal=False)
    if commands:
        store.queue_commands(commands)
    return applied, skipped


def _longer(here: tuple[float, float] | None, change: dict[str, Any], now: float) -> bool:
    """Does the change end later than what this node holds live?"""
    return here is None or here[1] <= now or here[1] < change["until"] - 1


def _suspend(store: Store, enforce: Enforcer, change: dict[str, Any], now: float,
             commands: list[tuple[str, str, float | None, str | None]]) -> bool:
    ip, aor = change["ip"], change["aor"]
    if not _longer(store.endpoint_span("suspend", ip, aor), change, now):
        return False
    # created = the origin's time, so a later lift compares right
    enforce.suspend_pair(ip, aor, change["until"] - change["ts"], reason=_origin(change),
                         failures=change["failures"], level=change["level"], now=change["ts"])
    commands.append(("suspend-pair", ip, change["until"] - now, aor))
    return True


def _hold(store: Store, enforce: Enforcer, change: dict[str, Any], now: float,
          commands: list[tuple[str, str, float | None, str | None]]) -> bool:
    kind, subject = change["hold"], change["subject"]
    if not _longer(store.endpoint_span("hold", kind, subject), change, now):
        return False
    length, seconds = change["until"] - change["ts"], change["until"] - now
    if kind == HOLD_ACCOUNT:
        enforce.protect_account(subject, length, sources=change["count"],
                                level=change["level"], reason=_origin(change), now=change["ts"])
        commands.append(("protect", subject, seconds, str(change["level"])))
    else:
        enforce.lockdown(subject, length, failures=change["count"], level=change["level"],
                         reason=_origin(change), now=change["ts"])
        commands.append(("lockdown", subject, seconds, str(change["level"])))
    return True


def _lift(store: Store, enforce: Enforcer, change: dict[str, Any],
          commands: list[tuple[str, str, float | None, str | None]]) -> bool:
    """An operator's lift elsewhere ends what was made before it here."""
    if change["op"] == "resume":
        ip, aor = change["ip"], change["aor"]
        here = store.endpoint_span("suspend", ip, aor)
        if here is None or here[0] > change["ts"]:
            return False  # nothing here, or suspended again after the lift
        if not enforce.lift_pair(ip, aor, reason="fleet"):
            return False
        commands.append(("lift-pair", ip, None, aor))
        return True
    kind, subject = change["hold"], change["subject"]
    here = store.endpoint_span("hold", kind, subject)
    if here is None or here[0] > change["ts"]:
        return False
    if kind == HOLD_ACCOUNT:
        enforce.end_protection(subject, reason="fleet")
        commands.append(("unprotect", subject, None, None))
    else:
        enforce.end_lockdown(subject, reason="fleet")
        commands.append(("unlock", subject, None, None))
    return True


def _origin(change: dict[str, Any]) -> str:
    """The stored reason of a fleet change: ``fleet:<node>:<why>``, as fleet bans keep it."""
    from floodguard.fleet.wire import ORIGIN_PREFIX

    reason = change["reason"]
    return reason if reason.startswith(ORIGIN_PREFIX) else \
        f"{ORIGIN_PREFIX}{change['node']}:{reason}"
