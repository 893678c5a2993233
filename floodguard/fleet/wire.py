"""Fleet wire format, pure: Redis key names, the changes nodes exchange, their merge rules, the
Lua scripts that apply those rules in Redis, and the field-by-field checks of whatever is read
back from Redis (entries, pub/sub messages, heartbeats). No I/O here.

Redis layout, ``<p>`` being ``[fleet] channel`` (default ``floodguard``; also the channel name)::

    <p>:bans    hash  ip -> {"op": "ban", kind, reason, aor, failures, until, ts, node}
                        or a tombstone {"op": "unban", until, ts, node}
    <p>:known   hash  ip -> {"op": "known", until, ts, node}
    <p>:allow   hash  network -> {"op": "allow", reason, until, ts, node} (until 0: until
                        removed) or a tombstone {"op": "disallow", until, ts, node}
    <p>:endpoints hash  known-good pairs, endpoint suspensions, holds (fleet/endpoints.py)
    <p>:nodes   hash  node -> {ts, instance, bans_set, bans_store, up_since, stopped}
    <p>:stats   hash  counts from the last sweep (bans, tombstones, known, deleted, ts)
    <p>:sweeper string: which node sweeps expired entries now (SET NX EX)

Whatever is read from Redis is untrusted: every entry is checked field by field
(``check_change``: a bannable canonical address, ``ts``/``until`` finite and in range, a small
``failures`` count, a known ``kind``, capped text) and a bad one is skipped and reported, never
blocking the entries after it.

``until`` and ``ts`` are wall-clock seconds (the time of the change), so nodes need NTP. Merge
rules, the same in Redis (``MERGE_LUA``) and on each node (``supersedes``): a ban never shortens
a ban (the later ``until`` stays); an unban lifts a ban made before it; a ban made after an unban
replaces it. The run-time allow list (``floodguard allow``) follows the same rules, ``allow``
as a ban and ``disallow`` as an unban (an ``until`` of 0 is later than any other). Tombstones
keep an unban visible to partitioned nodes until the lifted ban would have expired (at least
``TOMBSTONE_KEEP``), then the sweep removes them with the expired bans.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from floodguard import addr
from floodguard.errors import FloodguardError
from floodguard.kernel.rules import IPSET_MAX_TIMEOUT
from floodguard.policy.escalation import KIND_BLACKLIST, KIND_MANUAL, KIND_SUSPEND

if TYPE_CHECKING:
    from floodguard.store import BanRow, JournalEntry

TOMBSTONE_KEEP = 3600.0
MAX_FIELD = 256  # longest reason/aor/node taken from the fleet (longer ones are cut)
MAX_COUNT = 1_000_000  # largest failure count taken from the fleet
MAX_CLOCK_SKEW = 600.0  # seconds a change's time may be ahead of this node's clock
MAX_AHEAD = 2 * IPSET_MAX_TIMEOUT  # seconds an entry's `until` may lie in the future
MAX_ENTRY = 4096  # bytes of one Redis hash value (an entry is ~200)
MAX_MESSAGE = 8 * 1024 * 1024  # bytes of one pub/sub message (PUSH_BATCH entries)
KINDS = (KIND_SUSPEND, KIND_BLACKLIST, KIND_MANUAL)
# the tombstone ops; resume and release lift endpoint state (fleet/endpoints.py)
LIFTS = ("unban", "disallow", "resume", "release")
ENDPOINT_OPS = ("pair", "suspend", "hold", "resume", "release")
OPS = ("ban", "known", "allow", *LIFTS, "pair", "suspend", "hold")

ORIGIN_PREFIX = "fleet:"

# KEYS[1]: a hash; ARGV: channel, node, JSON list of changes. Applies the merge rules per
# address, publishes the accepted changes in one message and returns how many it accepted.
MERGE_LUA = """
local changes = cjson.decode(ARGV[3])
local out = {}
local function lifts(op)
  return op == 'unban' or op == 'disallow' or op == 'resume' or op == 'release'
end
local function horizon(c)
  if c.op == 'allow' and c['until'] == 0 then return math.huge end
  return c['until']
end
for _, c in ipairs(changes) do
  local take = true
  local f = c.key or c.ip
  local raw = redis.call('HGET', KEYS[1], f)
  if raw then
    local ok, cur = pcall(cjson.decode, raw)
    if ok and type(cur) == 'table' and type(cur.ts) == 'number'
        and type(cur['until']) == 'number' then
      if lifts(c.op) then
        if lifts(cur.op) then
          take = c.ts > cur.ts
        else
          take = c.ts >= cur.ts
          if take and cur['until'] > c['until'] then c['until'] = cur['until'] end
        end
      elseif lifts(cur.op) then
        take = c.ts > cur.ts
      else
        take = horizon(c) > horizon(cur)
      end
    end
  end
  if take then
    redis.call('HSET', KEYS[1], f, cjson.encode(c))
    out[#out + 1] = c
  end
end
if #out > 0 then
  redis.call('PUBLISH', ARGV[1], cjson.encode({node = ARGV[2], changes = out}))
end
return #out
"""

# KEYS[1]: a hash; ARGV: field, value pairs. Deletes each field still holding that value.
SWEEP_LUA = """
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
"""


@dataclass(frozen=True)
class Keys:
    """Redis key names of one fleet (``[fleet] channel`` is the prefix and the channel):
    ``bans``, ``known``, ``allow``, ``endpoints``, ``nodes``, ``stats`` and ``sweeper`` are
    ``<channel>:<that name>``."""

    channel: str
    bans: str = field(init=False, repr=False, compare=False)
    known: str = field(init=False, repr=False, compare=False)
    allow: str = field(init=False, repr=False, compare=False)
    endpoints: str = field(init=False, repr=False, compare=False)
    nodes: str = field(init=False, repr=False, compare=False)
    stats: str = field(init=False, repr=False, compare=False)
    sweeper: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("bans", "known", "allow", "endpoints", "nodes", "stats", "sweeper"):
            object.__setattr__(self, name, f"{self.channel}:{name}")


def split_origin(reason: str, node: str) -> tuple[str, str]:
    """(origin node, reason) of a stored reason: fleet bans are kept as ``fleet:<node>:<why>``."""
    if reason.startswith(ORIGIN_PREFIX):
        origin, sep, rest = reason[len(ORIGIN_PREFIX):].partition(":")
        if sep and origin:
            return origin, rest
    return node, reason


def change_from_journal(entry: JournalEntry, node: str) -> dict[str, Any]:
    """The fleet change for one local journal entry."""
    if entry.op in ENDPOINT_OPS:
        from floodguard.fleet import endpoints

        return endpoints.from_journal(entry, node)
    if entry.op == "unban":
        return {"op": "unban", "ip": entry.ip, "ts": entry.created,
                "until": entry.created + TOMBSTONE_KEEP, "node": node}
    if entry.op == "known":
        return {"op": "known", "ip": entry.ip, "ts": entry.created,
                "until": float(entry.until or 0.0), "node": node}
    if entry.op == "disallow":
        return {"op": "disallow", "ip": entry.ip, "ts": entry.created,
                "until": entry.created + TOMBSTONE_KEEP, "node": node}
    if entry.op == "allow":
        return change_from_allow(entry.ip, entry.reason or "manual", entry.created, entry.until,
                                 node)
    origin, reason = split_origin(entry.reason or "manual", node)
    return {"op": "ban", "ip": entry.ip, "kind": entry.kind or "manual", "reason": reason,
            "aor": entry.aor, "failures": entry.failures or 0, "until": float(entry.until or 0.0),
            "ts": entry.created, "node": origin}


def change_from_row(row: BanRow, node: str) -> dict[str, Any]:
    """The fleet change that re-states an active local ban."""
    origin, reason = split_origin(row.reason, node)
    return {"op": "ban", "ip": row.ip, "kind": row.kind, "reason": reason, "aor": row.aor,
            "failures": row.failures, "until": row.until, "ts": row.created, "node": origin}


def change_from_allow(net: str, reason: str, created: float, until: float | None,
                      node: str) -> dict[str, Any]:
    """The fleet change for a run-time allow-list entry (``until`` None: until removed)."""
    origin, reason = split_origin(reason, node)
    return {"op": "allow", "ip": net, "reason": reason, "ts": created,
            "until": 0.0 if until is None else float(until), "node": origin}


def horizon(change: dict[str, Any]) -> float:
    """When a change stops counting: its ``until``, infinity for an allow until removed."""
    if change["op"] == "allow" and change["until"] == 0:
        return math.inf
    return float(change["until"])


def live(change: dict[str, Any], now: float) -> bool:
    """Whether a change still means something at ``now`` (a tombstone always does)."""
    return change["op"] in LIFTS or horizon(change) > now


def supersedes(new: dict[str, Any], cur: dict[str, Any]) -> bool:
    """Whether change ``new`` replaces ``cur`` for the same address (MERGE_LUA does the same)."""
    if new["op"] in LIFTS:
        return new["ts"] > cur["ts"] if cur["op"] in LIFTS else new["ts"] >= cur["ts"]
    if cur["op"] in LIFTS:
        return new["ts"] > cur["ts"]
    return horizon(new) > horizon(cur)


_CONTROL = dict.fromkeys([*range(0x20), 0x7F, *range(0x80, 0xA0)], "?")


class BadEntry(FloodguardError, ValueError):
    """A fleet entry that cannot be applied; the message says which field and why."""


def _text(raw: dict[str, Any], key: str, default: str | None) -> str | None:
    """A text field: at most MAX_FIELD characters, control characters (which would reach
    terminals through ``blacklist list``) replaced by ``?``."""
    value = raw.get(key)
    if value is None or value == "":
        return default
    if type(value) is not str:
        raise BadEntry(f"{key} is not text")
    if len(value) > MAX_FIELD:
        value = value[:MAX_FIELD]
    if not value.isprintable():
        value = value.translate(_CONTROL)
    return value


def _seconds(raw: dict[str, Any], key: str, low: float, high: float) -> float:
    value = raw.get(key)
    if type(value) is not float and type(value) is not int:  # no bool, no text
        raise BadEntry(f"{key} is missing or not a number")
    number = float(value) if -1e18 < value < 1e18 else math.inf
    if not low <= number <= high:  # also false for nan
        raise BadEntry(f"{key} {shown(value)} is out of range")
    return number


def _count(raw: dict[str, Any], key: str) -> int:
    value = raw.get(key)
    if value is None:
        return 0
    if type(value) is float and value.is_integer():
        value = int(value)  # 6.0: numbers may come back as floats from Redis' Lua
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise BadEntry(f"{key} {shown(value)} is not an integer from 0 to {MAX_COUNT}")
    return value


# the checks every fleet entry shares, for fleet/endpoints.py
seconds_field = _seconds
text_field = _text
count_field = _count


def shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"


def check_change(raw: Any, now: float | None = None) -> dict[str, Any]:
    """A well-formed change from the fleet, every field bounded; BadEntry says what is wrong.

    The address must be one bannable address (canonical form kept); ``ts`` lies between 0 and
    ``now`` + MAX_CLOCK_SKEW, ``until`` between 0 and ``now`` + MAX_AHEAD; ``failures`` is a
    small non-negative integer; ``kind`` one of KINDS; text fields are capped (``_text``).
    """
    if type(raw) is not dict:
        raise BadEntry("not a JSON object")
    op = raw.get("op")
    if type(op) is not str or op not in OPS:  # op may be a list: no `in` before the type
        raise BadEntry(f"op {shown(op)} is not one of {', '.join(OPS)}")
    if op == "allow" or op == "disallow":
        return _check_allow(raw, op, time.time() if now is None else now)
    if op in ENDPOINT_OPS:
        from floodguard.fleet import endpoints

        return endpoints.check(raw, op, time.time() if now is None else now)
    try:
        address = addr.parse(raw.get("ip"))  # type: ignore[arg-type]
    except ValueError as exc:
        raise BadEntry(str(exc)) from None
    problem = addr.unbannable(address)
    if problem is not None:
        raise BadEntry(f"{address} is {problem}")
    now = time.time() if now is None else now
    change = {"op": op, "ip": str(address), "ts": _seconds(raw, "ts", 0.0, now + MAX_CLOCK_SKEW),
              "until": _seconds(raw, "until", 0.0, now + MAX_AHEAD),
              "node": _text(raw, "node", "?")}
    if op == "ban":
        kind = raw.get("kind") or "manual"
        if kind not in KINDS:
            raise BadEntry(f"kind {shown(kind)} is not one of {', '.join(KINDS)}")
        change["kind"] = kind
        change["reason"] = _text(raw, "reason", "fleet")
        change["aor"] = _text(raw, "aor", None)
        change["failures"] = _count(raw, "failures")
    return change


def _check_allow(raw: dict[str, Any], op: str, now: float) -> dict[str, Any]:
    """An allow-list change: ``ip`` a network narrower than /0 (canonical CIDR kept)."""
    try:
        net = addr.parse_network(raw.get("ip"))  # type: ignore[arg-type]
    except ValueError as exc:
        raise BadEntry(str(exc)) from None
    if net.prefixlen == 0:
        raise BadEntry(f"{net} would allow every source")
    change = {"op": op, "ip": str(net), "ts": _seconds(raw, "ts", 0.0, now + MAX_CLOCK_SKEW),
              "until": _seconds(raw, "until", 0.0, math.inf if op == "allow"
                                else now + MAX_AHEAD),
              "node": _text(raw, "node", "?")}
    if op == "allow":
        if not math.isfinite(change["until"]):
            raise BadEntry("until is out of range")
        change["reason"] = _text(raw, "reason", "fleet")
    return change


def valid_change(raw: Any, now: float | None = None) -> dict[str, Any] | None:
    """``check_change``, None instead of BadEntry."""
    try:
        return check_change(raw, now)
    except BadEntry:
        return None


def decode(raw: Any, limit: int = MAX_ENTRY) -> Any:
    """JSON from Redis; None when it is not JSON or longer than ``limit`` bytes."""
    if isinstance(raw, bytes | str) and len(raw) > limit:
        return None
    try:
        return json.loads(raw)
    except (TypeError, ValueError, RecursionError):  # [[[[… nests past the recursion limit
        return None


def parse_entry(raw: Any, now: float) -> dict[str, Any]:
    """The change stored as one Redis hash value; BadEntry when it is not a good one."""
    if isinstance(raw, bytes | str) and len(raw) > MAX_ENTRY:
        raise BadEntry(f"longer than {MAX_ENTRY} bytes")
    return check_change(decode(raw), now)


def read_page(page: dict[Any, Any], now: float) -> tuple[list[dict[str, Any]], list[str]]:
    """The valid changes of one page of a Redis hash (field -> entry) and the bad ones (why)."""
    changes: list[dict[str, Any]] = []
    bad: list[str] = []
    for name, raw in page.items():
        try:
            changes.append(parse_entry(raw, now))
        except BadEntry as exc:
            bad.append(f"{shown(redis_name(name))}: {exc}")
    return changes, bad


def read_message(data: Any, node: str, changes: list[dict[str, Any]], origins: set[str],
                 bad: list[str]) -> None:
    """The valid changes of one message published by another node (not ``node``, this one)
    go to ``changes``, its origin to ``origins``, the bad ones (with why) to ``bad``."""
    body = decode(data, MAX_MESSAGE)
    if not isinstance(body, dict) or not isinstance(body.get("changes"), list):
        bad.append(f"message: not a JSON object with changes, or over {MAX_MESSAGE} bytes")
        return
    if body.get("node") == node:
        return  # this node's own changes, back from the channel
    origin = redis_name(body.get("node"))
    origins.add(origin)
    now = time.time()
    for raw in body["changes"]:
        try:
            changes.append(check_change(raw, now))
        except BadEntry as exc:
            ip = raw.get("ip") if isinstance(raw, dict) else None
            bad.append(f"from {origin}: {shown(ip)}: {exc}")


def redis_name(value: Any) -> str:
    """A Redis field name (a node or an address) for events and status, cut to MAX_FIELD."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text[:MAX_FIELD]


def parse_beat(raw: Any) -> dict[str, Any] | None:
    """A node's heartbeat as another node wrote it, each field bounded; None if not one."""
    data = decode(raw)
    if not isinstance(data, dict):
        return None

    def count(key: str) -> int | None:
        value = data.get(key)
        return value if type(value) is int and 0 <= value <= 2**53 else None

    instance = data.get("instance")
    up_since = data.get("up_since")
    return {"ts": number(data.get("ts")), "bans_set": count("bans_set"),
            "bans_store": count("bans_store"), "stopped": data.get("stopped") is True,
            "instance": instance[:MAX_FIELD] if isinstance(instance, str) else None,
            "up_since": number(up_since) if up_since is not None else None}


def number(value: Any) -> float:
    """A number another node wrote (heartbeat, stats); 0.0 when it is not a finite one."""
    try:
        found = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return found if math.isfinite(found) else 0.0
