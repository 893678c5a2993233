"""What the policy engine hands out about itself: the learned state that must survive a restart
(``export_state`` / ``restore_state``, behind ``Engine.export_state`` / ``Engine.restore_state``)
and its stats (table sizes, evictions, verdicts by reason, learning and ban counters).

Functions of the engine's tables, which the engine passes in: nothing here reaches into it.
Times in a snapshot are relative to ``now`` (remaining / ago), so it can be restored against
another monotonic clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .escalation import KINDS, BanRecord, BanTable, Blacklist
from .lru import LruTable
from .suspension import SuspensionCounters

STATE_VERSION = 1

# Verdict reasons always listed in the stats (0 when never given), besides each gateway's.
_VERDICTS = ("ok", "allow", "banned", "suspended", "suspended:pair", "protected:account",
             "lockdown", "scanner", "rate:register", "rate:sip", "budget")
# Learning and ban counters always listed in the stats.
_COUNTERS = ("responses", "unproven", "shared_nonces", "stale", "failures", "successes", "unban",
             "ban_refused:allow", "ban:pair", "protect:account", "lockdown",
             *(f"ban:{kind}" for kind in KINDS))


def export_state(
    now: float,
    bans: BanTable,
    known: LruTable[str, float],
    counters: SuspensionCounters,
    blacklist: Blacklist,
) -> dict[str, Any]:
    """JSON-serialisable snapshot of the bans, the known-good sources (ip -> until), the
    consecutive-failure counters and the blacklist's windows and escalation levels."""
    return {
        "version": STATE_VERSION,
        "bans": [
            {
                "ip": r.ip, "remaining": round(r.until - now, 3), "reason": r.reason,
                "kind": r.kind, "aor": r.aor, "failures": r.failures, "level": r.level,
            }
            for r in bans.active(now)
        ],
        "known": [[ip, round(until - now, 3)] for ip, until, _ in known.items(now)],
        "counters": counters.export(now),
        "blacklist": blacklist.export(now),
    }


def restore_state(
    now: float,
    state: dict[str, Any],
    bans: BanTable,
    known: LruTable[str, float],
    counters: SuspensionCounters,
    blacklist: Blacklist,
    *,
    is_allowed: Callable[[str], bool],
    window: float,
    decay: float,
) -> None:
    """Fill empty tables from a snapshot of export_state(). Bans of sources ``is_allowed``
    covers are dropped. ValueError on an unknown snapshot version (before any table is
    touched)."""
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise ValueError(f"unsupported policy state (want version {STATE_VERSION})")
    for item in state.get("bans", ()):
        remaining = float(item["remaining"])
        ip = str(item["ip"])
        kind = str(item["kind"])
        if remaining <= 0 or kind not in KINDS or is_allowed(ip):
            continue
        aor = item.get("aor")
        bans.add(
            BanRecord(
                ip, now + remaining, str(item.get("reason", "")), kind,
                None if aor is None else str(aor), int(item.get("failures", 0)),
                int(item.get("level", 0)),
            ),
            now,
        )
    for ip, remaining in state.get("known", ()):
        if float(remaining) > 0:
            until = now + float(remaining)
            known.put(str(ip), until, until)
    counters.restore(now, state.get("counters", {}))
    blacklist.restore(now, state.get("blacklist", {}), window, decay)


def stats(
    tables: Mapping[str, LruTable[Any, Any]],
    bans: BanTable,
    counts: Mapping[str, int],
    gateway_reasons: Iterable[str],
) -> dict[str, int]:
    """Table sizes ("table:<name>"), LRU evictions ("evicted:<name>"), verdicts by reason
    ("verdict:<reason>", with each gateway's "rate:gateway:<name>") and learning/ban counters."""
    out: dict[str, int] = {}
    for name, table in tables.items():
        out[f"table:{name}"] = len(table)
        out[f"evicted:{name}"] = table.evicted
    out["table:bans"] = len(bans)
    out["evicted:bans"] = bans.evicted
    for reason in sorted({*_VERDICTS, *gateway_reasons}):
        out[f"verdict:{reason}"] = counts.get(reason, 0)
    for key in _COUNTERS:
        out[key] = counts.get(key, 0)
    for key, value in counts.items():
        if key.startswith("malformed:"):
            out[f"verdict:{key}"] = value
    return out
