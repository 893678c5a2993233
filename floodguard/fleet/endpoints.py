"""Fleet wire format for the endpoint state (issue #16), pure: known-good (source, AOR) pairs,
endpoint suspensions and holds (account protections, source lockdowns), shared like bans.

Redis: one hash ``<p>:endpoints``, its field named by the change's ``key``::

    pair|<ip>|<aor>         {"op": "pair", ip, aor, until, ts, node}
    suspend|<ip>|<aor>      {"op": "suspend", ip, aor, reason, failures, level, until, ts, node}
                            or a tombstone {"op": "resume", ip, aor, until, ts, node}
    hold|<kind>|<subject>   {"op": "hold", hold, subject, reason, count, level, until, ts, node}
                            or a tombstone {"op": "release", hold, subject, until, ts, node}

``hold`` is ``account`` (subject: an AOR) or ``lockdown`` (subject: a source key). The merge
rules are the bans' (``wire.supersedes`` and ``MERGE_LUA``, which names the field by ``key``):
an entry never shortens one, a tombstone lifts what was made before it. Tombstones are written
for an operator's lift only (``blacklist remove``); an expiry needs none. A lockdown's end by the
operator travels as the unban it is part of.

``wire`` dispatches these ops here (imported lazily there: this module builds on its checks).
Every field read back is checked like a ban's: canonical address keys (IPv6 sources as their
prefix network), bounded AORs (no ``|``), times in range, small counts, capped text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from floodguard import addr
from floodguard.fleet import wire
from floodguard.fleet.wire import BadEntry

if TYPE_CHECKING:
    from floodguard.store import HoldRow, JournalEntry, PairBanRow

ITEMS = ("pair", "suspend", "hold")
LIFTS = ("resume", "release")
OPS = (*ITEMS, *LIFTS)
HOLDS = ("account", "lockdown")
MAX_AOR = 256
MAX_LEVEL = 64
TOMBSTONE_KEEP = 3600.0


def key_of(change: dict[str, Any]) -> str:
    """The Redis field of a change (also how a batch keeps the latest per endpoint)."""
    op = change["op"]
    if op in ("hold", "release"):
        return f"hold|{change['hold']}|{change['subject']}"
    return f"{'pair' if op == 'pair' else 'suspend'}|{change['ip']}|{change['aor']}"


def _with_key(change: dict[str, Any]) -> dict[str, Any]:
    change["key"] = key_of(change)
    return change


def from_journal(entry: JournalEntry, node: str) -> dict[str, Any]:
    """The fleet change for one local journal entry of an endpoint op."""
    ts = entry.created
    if entry.op == "pair":
        return _with_key({"op": "pair", "ip": entry.ip, "aor": entry.aor, "ts": ts,
                          "until": float(entry.until or 0.0), "node": node})
    if entry.op == "suspend":
        return _with_key({"op": "suspend", "ip": entry.ip, "aor": entry.aor,
                          "reason": entry.reason or "suspended",
                          "failures": entry.failures or 0, "level": _level(entry.kind),
                          "until": float(entry.until or 0.0), "ts": ts, "node": node})
    if entry.op == "resume":
        return _with_key({"op": "resume", "ip": entry.ip, "aor": entry.aor, "ts": ts,
                          "until": ts + TOMBSTONE_KEEP, "node": node})
    kind, _, level = (entry.kind or "").partition(":")  # a hold's kind and level: "account:2"
    subject = entry.ip if kind == "lockdown" else entry.aor
    if entry.op == "hold":
        return _with_key({"op": "hold", "hold": kind, "subject": subject,
                          "reason": entry.reason or "hold", "count": entry.failures or 0,
                          "level": _level(level), "until": float(entry.until or 0.0), "ts": ts,
                          "node": node})
    return _with_key({"op": "release", "hold": kind, "subject": subject, "ts": ts,
                      "until": ts + TOMBSTONE_KEEP, "node": node})


def _level(text: str | None) -> int:
    return int(text) if text is not None and text.isdigit() and 0 < int(text) <= MAX_LEVEL else 1


def from_state(now: float, node: str, pairs: list[tuple[str, str, float]],
               suspensions: list[PairBanRow], holds: list[HoldRow]) -> list[dict[str, Any]]:
    """The changes that re-state this node's live endpoint state (a re-sync after an outage)."""
    out = [_with_key({"op": "pair", "ip": ip, "aor": aor, "ts": now, "until": now + left,
                      "node": node}) for ip, aor, left in pairs]
    out += [_with_key({"op": "suspend", "ip": r.ip, "aor": r.aor, "reason": r.reason,
                       "failures": r.failures, "level": r.level, "until": r.until,
                       "ts": r.created, "node": node}) for r in suspensions]
    out += [_with_key({"op": "hold", "hold": h.kind, "subject": h.key, "reason": h.reason,
                       "count": h.count, "level": h.level, "until": h.until, "ts": h.created,
                       "node": node}) for h in holds]
    return out


def check(raw: dict[str, Any], op: str, now: float) -> dict[str, Any]:
    """A well-formed endpoint change (``wire.check_change`` for these ops)."""
    change: dict[str, Any] = {"op": op, "ts": wire.seconds_field(raw, "ts", 0.0,
                                                                 now + wire.MAX_CLOCK_SKEW),
                              "until": wire.seconds_field(raw, "until", 0.0,
                                                          now + wire.MAX_AHEAD),
                              "node": wire.text_field(raw, "node", "?")}
    if op in ("hold", "release"):
        kind = raw.get("hold")
        if type(kind) is not str or kind not in HOLDS:
            raise BadEntry(f"hold {wire.shown(kind)} is not one of {', '.join(HOLDS)}")
        change["hold"] = kind
        subject = raw.get("subject")
        change["subject"] = _source(subject) if kind == "lockdown" else _aor(subject)
        if op == "hold":
            change["reason"] = wire.text_field(raw, "reason", "fleet")
            change["count"] = wire.count_field(raw, "count")
            change["level"] = _level_field(raw)
    else:
        change["ip"] = _source(raw.get("ip"))
        change["aor"] = _aor(raw.get("aor"))
        if op == "suspend":
            change["reason"] = wire.text_field(raw, "reason", "fleet")
            change["failures"] = wire.count_field(raw, "failures")
            change["level"] = _level_field(raw)
    return _with_key(change)


def _source(value: Any) -> str:
    """A source key: one bannable address, or an IPv6 prefix network (how the guard keys
    IPv6 sources)."""
    if type(value) is not str:
        raise BadEntry("ip is not text")
    try:
        if "/" in value:
            net = addr.parse_network(value)
            if net.version != 6 or net.prefixlen < 32:
                raise ValueError(f"{value} is not an IPv6 source prefix")
            return str(net)
        address = addr.parse(value)
    except ValueError as exc:
        raise BadEntry(str(exc)) from None
    problem = addr.unbannable(address)
    if problem is not None:
        raise BadEntry(f"{address} is {problem}")
    return str(address)


def _aor(value: Any) -> str:
    if type(value) is not str or not value or len(value) > MAX_AOR:
        raise BadEntry(f"aor must be text of 1 to {MAX_AOR} characters")
    if "|" in value or not value.isprintable() or value != value.strip():
        raise BadEntry("aor holds a control character, a space or |")
    return value.lower()


def _level_field(raw: dict[str, Any]) -> int:
    value = raw.get("level", 1)
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int or not 1 <= value <= MAX_LEVEL:
        raise BadEntry(f"level must be an integer from 1 to {MAX_LEVEL}")
    return value
