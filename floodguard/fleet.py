"""Fleet: bans, unbans and known-good sources shared by every floodguard node through Redis.

Each node keeps its own SQLite store as the source of truth for its own decisions. A fleet link
(one thread in the supervisor, see ``daemon.supervise``) connects that store to Redis:

* **Outbound.** Every ~50 ms it reads the store journal (every local ban, unban and known-good
  mark, whoever made it: a guard worker, ``floodguard blacklist add/remove``, a feed) and merges
  the changes into Redis with one Lua script call per batch, which also publishes the changes it
  accepted on the pub/sub channel. The journal position is persisted, so nothing is skipped
  across an outage or a restart.
* **Inbound.** A pub/sub subscriber applies the other nodes' changes to this node's kernel sets
  (with the remaining time) and store (without journalling them, so they are not echoed). The
  node's own allow list always wins: a fleet ban of an allow-listed address is reported
  (``fleet_ban_allowed``) and never enters the kernel. An unban from the fleet is also queued
  for the guard workers (as ``floodguard blacklist remove`` does), so their engines lift it too.
* **Start.** ``FleetLink.load`` pulls the current fleet bans before the guard workers start.
* **Outage.** When Redis is down or unreachable, the node works alone; the link retries with
  exponential backoff (``fleet_down`` / ``fleet_up`` events, the ``floodguard_fleet_up`` metric)
  and on reconnect re-syncs both ways: it pushes its journal backlog and every active local ban
  Redis lacks (or holds shorter), then pulls every fleet ban it lacks. No ban is lost.

Redis layout, ``<p>`` being ``[fleet] channel`` (default ``floodguard``; also the channel name)::

    <p>:bans    hash  ip -> {"op": "ban", kind, reason, aor, failures, until, ts, node}
                        or a tombstone {"op": "unban", until, ts, node}
    <p>:known   hash  ip -> {"op": "known", until, ts, node}
    <p>:nodes   hash  node -> {ts, instance, bans_set, bans_store, up_since, stopped}
    <p>:stats   hash  counts from the last sweep (bans, tombstones, known, deleted, ts)
    <p>:sweeper string: which node sweeps expired entries now (SET NX EX)

Whatever is read from Redis is untrusted: every entry is checked field by field
(``check_change``: a bannable canonical address, ``ts``/``until`` finite and in range, a small
``failures`` count, a known ``kind``, capped text) and a bad one is skipped and reported
(``fleet_invalid`` with a few examples), never blocking the entries after it; a row SQLite still
refuses is skipped alone (``_write``).

``until`` and ``ts`` are wall-clock seconds (the time of the change), so nodes need NTP. Merge
rules, the same in Redis (Lua) and on each node: a ban never shortens a ban (the later ``until``
stays); an unban lifts a ban made before it; a ban made after an unban replaces it. Tombstones
keep an unban visible to partitioned nodes until the lifted ban would have expired (at least
``TOMBSTONE_KEEP``), then the sweep removes them with the expired bans.

URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS; redis-py query
options such as ``?ssl_ca_certs=/etc/ssl/ca.pem`` pass through), ``unix:///path?db=0``,
``redis+sentinel://[[user]:password@]host:26379[,host:26379...]/service[/db]`` (the password is
the master's; ``?sentinel_password=`` for the sentinels; ``rediss+sentinel://`` for TLS) and
``redis+cluster://[[user]:password@]host:port`` (any seed node; ``rediss+cluster://``).
"""

from __future__ import annotations

import bisect
import contextlib
import json
import math
import secrets
import socket
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

from floodguard import addr
from floodguard.config import Config
from floodguard.events import EventLog
from floodguard.kernel.rules import IPSET_MAX_TIMEOUT
from floodguard.policy.blacklist import KIND_BLACKLIST, KIND_MANUAL, KIND_SUSPEND
from floodguard.store import BanRow, JournalEntry, Store

POLL_SECONDS = 0.05  # journal poll and pub/sub wait per step
PUSH_BATCH = 2000  # changes per Lua call
PUSH_BUDGET = 0.25  # seconds of pushing per step before inbound messages get a turn
MAX_DRAIN = 64  # pub/sub messages applied per step
HEARTBEAT_EVERY = 2.0
SNAPSHOT_EVERY = 1.0
SWEEP_EVERY = 30.0
SWEEP_PAGE = 500
SWEEP_GRACE = 60.0  # seconds past `until` before the sweep deletes an entry
TOMBSTONE_KEEP = 3600.0
NODE_FORGET = 86400.0  # the sweep forgets nodes silent for this long
NODE_ALIVE = 3 * HEARTBEAT_EVERY
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 5.0
CONNECT_TIMEOUT = 1.0
SOCKET_TIMEOUT = 3.0
LOAD_TIMEOUT = 5.0
SQL_CHUNK = 500
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RECENT_LAGS = 10000
MAX_FIELD = 256  # longest reason/aor/node taken from the fleet (longer ones are cut)
MAX_COUNT = 1_000_000  # largest failure count taken from the fleet
MAX_CLOCK_SKEW = 600.0  # seconds a change's time may be ahead of this node's clock
MAX_AHEAD = 2 * IPSET_MAX_TIMEOUT  # seconds an entry's `until` may lie in the future
MAX_ENTRY = 4096  # bytes of one Redis hash value (an entry is ~200)
MAX_MESSAGE = 8 * 1024 * 1024  # bytes of one pub/sub message (PUSH_BATCH entries)
KINDS = (KIND_SUSPEND, KIND_BLACKLIST, KIND_MANUAL)
EVENT_IPS = 20  # addresses listed in one fleet_applied event
EVENT_BAD = 5  # malformed entries quoted in one fleet_invalid event

SNAPSHOT = "fleet"
CURSOR_SNAPSHOT = "fleet-cursor"
ORIGIN_PREFIX = "fleet:"

# KEYS[1]: a hash; ARGV: channel, node, JSON list of changes. Applies the merge rules per
# address, publishes the accepted changes in one message and returns how many it accepted.
MERGE_LUA = """
local changes = cjson.decode(ARGV[3])
local out = {}
for _, c in ipairs(changes) do
  local take = true
  local raw = redis.call('HGET', KEYS[1], c.ip)
  if raw then
    local ok, cur = pcall(cjson.decode, raw)
    if ok and type(cur) == 'table' and type(cur.ts) == 'number'
        and type(cur['until']) == 'number' then
      if c.op == 'unban' then
        if cur.op == 'unban' then
          take = c.ts > cur.ts
        else
          take = c.ts >= cur.ts
          if take and cur['until'] > c['until'] then c['until'] = cur['until'] end
        end
      elseif cur.op == 'unban' then
        take = c.ts > cur.ts
      else
        take = c['until'] > cur['until']
      end
    end
  end
  if take then
    redis.call('HSET', KEYS[1], c.ip, cjson.encode(c))
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


class FleetError(Exception):
    """The fleet cannot be reached or is not configured; the message is one line."""


# ---------------------------------------------------------------- names, URLs, clients


def node_name(cfg: Config) -> str:
    """This node's name in the fleet: ``[fleet] node``, else the host name."""
    return cfg.fleet.node or socket.gethostname()


@dataclass(frozen=True)
class Keys:
    """Redis key names of one fleet (``[fleet] channel`` is the prefix and the channel)."""

    channel: str

    @property
    def bans(self) -> str:
        return f"{self.channel}:bans"

    @property
    def known(self) -> str:
        return f"{self.channel}:known"

    @property
    def nodes(self) -> str:
        return f"{self.channel}:nodes"

    @property
    def stats(self) -> str:
        return f"{self.channel}:stats"

    @property
    def sweeper(self) -> str:
        return f"{self.channel}:sweeper"


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (for logs, status and events)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" not in netloc:
        return url
    userinfo, _, hosts = netloc.rpartition("@")
    user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
    shown = f"{user}:***" if ":" in userinfo else "***"
    query = "&".join(
        f"{k}=***" if "password" in k else f"{k}={quote(v[0])}"
        for k, v in parse_qs(parts.query).items())
    return urlunsplit((parts.scheme, f"{shown}@{hosts}", parts.path, query, parts.fragment))


def _common_kwargs(timeout: float, name: str) -> dict[str, Any]:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return {"socket_timeout": timeout, "socket_connect_timeout": min(CONNECT_TIMEOUT, timeout),
            "socket_keepalive": True, "client_name": name,
            # no silent reconnects: redis-py would re-subscribe quietly and the messages
            # published meanwhile would be lost; the link reconnects itself and re-syncs
            "retry": Retry(NoBackoff(), 0)}


def _sentinel(url: str, kwargs: dict[str, Any]) -> Any:
    from redis.sentinel import Sentinel

    scheme, _, rest = url.partition("://")
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    userinfo, _, hosts = netloc.rpartition("@")
    sentinels = []
    for item in filter(None, (h.strip() for h in hosts.split(","))):
        if item.startswith("["):  # [v6]:port
            host, _, port = item[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = item.partition(":")
        sentinels.append((host, int(port) if port else 26379))
    service, _, db = path.partition("/")
    if not service or not sentinels or not all(host for host, _ in sentinels):
        raise FleetError(f"{redact(url)}: expected {scheme}://[password@]host:port[,...]/service")
    query_args = {k: unquote(v[0]) for k, v in parse_qs(query).items()}
    master = dict(kwargs)
    if userinfo:
        user, _, password = userinfo.partition(":")
        if user:
            master["username"] = unquote(user)
        if password:
            master["password"] = unquote(password)
    if db:
        master["db"] = int(db)
    sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    for key in ("sentinel_password", "sentinel_username"):
        if key in query_args:
            sentinel_kwargs[key.removeprefix("sentinel_")] = query_args.pop(key)
    if scheme.startswith("rediss"):
        master["ssl"] = True
        sentinel_kwargs["ssl"] = True
    for key, value in query_args.items():
        if key.startswith("ssl_"):
            master[key] = value
            sentinel_kwargs[key] = value
    return Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs).master_for(service, **master)


def connect(url: str, *, timeout: float = SOCKET_TIMEOUT, name: str = "floodguard") -> Any:
    """A redis-py client for ``url`` (see the module docstring for the schemes)."""
    scheme = url.partition("://")[0].lower()
    kwargs = _common_kwargs(timeout, name)
    try:
        if scheme.endswith("+sentinel"):
            return _sentinel(url, kwargs)
        if scheme.endswith("+cluster"):
            from redis.cluster import RedisCluster

            kwargs.pop("retry")
            return RedisCluster.from_url(url.replace("+cluster", "", 1), **kwargs)
        from redis import Redis

        if scheme == "unix":
            kwargs.pop("socket_keepalive")  # a TCP option
        return Redis.from_url(url, **kwargs)
    except (ValueError, TypeError) as exc:
        raise FleetError(f"{redact(url)}: {exc}") from None


def _errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError, FleetError)


# ---------------------------------------------------------------- changes


def split_origin(reason: str, node: str) -> tuple[str, str]:
    """(origin node, reason) of a stored reason: fleet bans are kept as ``fleet:<node>:<why>``."""
    if reason.startswith(ORIGIN_PREFIX):
        origin, sep, rest = reason[len(ORIGIN_PREFIX):].partition(":")
        if sep and origin:
            return origin, rest
    return node, reason


def change_from_journal(entry: JournalEntry, node: str) -> dict[str, Any]:
    """The fleet change for one local journal entry."""
    if entry.op == "unban":
        return {"op": "unban", "ip": entry.ip, "ts": entry.created,
                "until": entry.created + TOMBSTONE_KEEP, "node": node}
    if entry.op == "known":
        return {"op": "known", "ip": entry.ip, "ts": entry.created,
                "until": float(entry.until or 0.0), "node": node}
    origin, reason = split_origin(entry.reason or "manual", node)
    return {"op": "ban", "ip": entry.ip, "kind": entry.kind or "manual", "reason": reason,
            "aor": entry.aor, "failures": entry.failures or 0, "until": float(entry.until or 0.0),
            "ts": entry.created, "node": origin}


def change_from_row(row: BanRow, node: str) -> dict[str, Any]:
    """The fleet change that re-states an active local ban."""
    origin, reason = split_origin(row.reason, node)
    return {"op": "ban", "ip": row.ip, "kind": row.kind, "reason": reason, "aor": row.aor,
            "failures": row.failures, "until": row.until, "ts": row.created, "node": origin}


def supersedes(new: dict[str, Any], cur: dict[str, Any]) -> bool:
    """Whether change ``new`` replaces ``cur`` for the same address (MERGE_LUA does the same)."""
    if new["op"] == "unban":
        return new["ts"] > cur["ts"] if cur["op"] == "unban" else new["ts"] >= cur["ts"]
    if cur["op"] == "unban":
        return new["ts"] > cur["ts"]
    return new["until"] > cur["until"]


_CONTROL = dict.fromkeys([*range(0x20), 0x7F, *range(0x80, 0xA0)], "?")


class BadEntry(ValueError):
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
        raise BadEntry(f"{key} {_shown(value)} is out of range")
    return number


def _count(raw: dict[str, Any], key: str) -> int:
    value = raw.get(key)
    if value is None:
        return 0
    if type(value) is float and value.is_integer():
        value = int(value)  # 6.0: numbers may come back as floats from Redis' Lua
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise BadEntry(f"{key} {_shown(value)} is not an integer from 0 to {MAX_COUNT}")
    return value


def _shown(value: Any) -> str:
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
    if op != "ban" and op != "unban" and op != "known":  # not `in` a set: op may be a list
        raise BadEntry(f"op {_shown(op)} is not ban, unban or known")
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
            raise BadEntry(f"kind {_shown(kind)} is not one of {', '.join(KINDS)}")
        change["kind"] = kind
        change["reason"] = _text(raw, "reason", "fleet")
        change["aor"] = _text(raw, "aor", None)
        change["failures"] = _count(raw, "failures")
    return change


def valid_change(raw: Any, now: float | None = None) -> dict[str, Any] | None:
    """``check_change``, None instead of BadEntry."""
    try:
        return check_change(raw, now)
    except BadEntry:
        return None


# ---------------------------------------------------------------- this node: allow list, kernel


AllowList = addr.Networks  # blacklist.allow parsed once; ``covering(ip)`` as bans.allowed_by


class KernelWriter:
    """Writes the fleet's set entries, many per batch.

    Through ``kernel.ipset_netlink`` (one raw netlink message per entry, ~11 µs here) when the
    set manager is floodguard's (pyroute2 costs ~0.5 ms an entry: 10,000 bans/s would need five
    cores); set managers without ``specs`` (test fakes) are used as they are.
    """

    def __init__(self, sets: Any) -> None:
        from floodguard.kernel import KernelError

        self.sets = sets
        self.writer = sets
        specs = getattr(sets, "specs", None)
        if specs is not None:
            # without the raw netlink writer the set manager's slow path still works
            with contextlib.suppress(KernelError, ImportError):
                from floodguard.kernel.ipset_netlink import NetlinkSetWriter

                self.writer = NetlinkSetWriter(specs)

    def add_many(self, kind: str, items: list[tuple[str, float]]) -> tuple[list[str], list[str]]:
        """Add (or renew) (address, seconds) pairs; returns the addresses not added: (set full,
        other error)."""
        from floodguard.kernel import KernelError, SetFullError

        full: list[str] = []
        failed: list[str] = []
        add = self.writer.add
        for ip, seconds in items:
            try:
                add(kind, ip, _timeout(seconds))
            except SetFullError:
                full.append(ip)
            except (KernelError, OSError, ValueError):
                failed.append(ip)
        return full, failed

    def remove(self, kind: str, ip: str) -> None:
        from floodguard.kernel import KernelError

        with contextlib.suppress(KernelError, OSError):
            self.writer.remove(kind, ip)

    def close(self) -> None:
        if self.writer is not self.sets:
            with contextlib.suppress(Exception):
                self.writer.close()


def _timeout(seconds: float) -> int:
    return min(max(1, math.ceil(seconds)), IPSET_MAX_TIMEOUT)


# ---------------------------------------------------------------- this node: store


def _local(store: Store, table: str, ips: list[str]) -> dict[str, tuple[float, float]]:
    """ip -> (created, until) of the rows in bans (or until, until in known) for ips."""
    out: dict[str, tuple[float, float]] = {}
    what = "created, until" if table == "bans" else "until, until"
    for i in range(0, len(ips), SQL_CHUNK):
        chunk = ips[i:i + SQL_CHUNK]
        marks = ",".join("?" * len(chunk))
        for ip, created, until in store.db.execute(
                f"SELECT ip, {what} FROM {table} WHERE ip IN ({marks})", chunk):  # noqa: S608
            out[ip] = (created, until)
    return out


# a row SQLite cannot take (e.g. an integer over 64 bits); "database is locked" and the like
# are not among them: they propagate, and the link retries the whole batch later
_ROW_ERRORS = (OverflowError, ValueError, TypeError, sqlite3.InterfaceError,
               sqlite3.IntegrityError)


def _write(store: Store, sql: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Many rows in few transactions (Store.put_ban commits each row: ~75 µs a ban); returns
    the rows SQLite refused, each tried alone after its chunk failed, so one bad row never
    blocks the others.

    Rows written here are not journalled: they came from the fleet.
    """
    refused: list[tuple[Any, ...]] = []
    for i in range(0, len(rows), SQL_CHUNK):
        chunk = rows[i:i + SQL_CHUNK]
        try:
            with store.db:
                store.db.execute("BEGIN")
                store.db.executemany(sql, chunk)
        except _ROW_ERRORS:
            for row in chunk:
                try:
                    store.db.execute(sql, row)
                except _ROW_ERRORS:
                    refused.append(row)
    return refused


_PUT_BANS = ("INSERT OR REPLACE INTO bans(ip, kind, reason, aor, failures, created, until) "
             "VALUES (?, ?, ?, ?, ?, ?, ?)")
_PUT_KNOWN = "INSERT OR REPLACE INTO known(ip, until) VALUES (?, ?)"


def count_store_bans(store: Store, now: float) -> int:
    found = store.db.execute("SELECT COUNT(*) FROM bans WHERE until > ?", (now,)).fetchone()
    return int(found[0])


def count_set(sets: Any, kind: str = "ban") -> int | None:
    """Entries in this node's kernel sets of a kind (both families); None when unreadable."""
    try:
        return sum(info.entries for info in (sets.info(sets.spec(kind, fam).name)
                                             for fam in (4, 6)) if info is not None)
    except Exception:  # noqa: BLE001 — a count for status only
        return None


@dataclass
class ApplyResult:
    """What applying a batch of fleet changes to this node did."""

    bans: list[str] = field(default_factory=list)
    unbans: list[str] = field(default_factory=list)
    known: int = 0
    allowed: list[tuple[str, str, str]] = field(default_factory=list)  # ip, network, origin
    skipped: int = 0  # already as long here, older than what is here, or expired
    monitor: int = 0  # not applied: monitor mode
    full: int = 0
    errors: int = 0
    lags: list[float] = field(default_factory=list)


class Applier:
    """Applies fleet changes to this node's kernel sets and store, with the merge rules."""

    def __init__(self, cfg: Config, store: Store, sets: Any) -> None:
        self.store = store
        self.kernel = KernelWriter(sets)
        self.cfg = cfg
        self.allow = AllowList(cfg.blacklist.allow)

    def close(self) -> None:
        self.kernel.close()

    def reload(self, cfg: Config) -> list[str]:
        """New settings; lifts (here only) fleet bans the new allow list covers."""
        old = self.cfg
        self.cfg = cfg
        self.allow = AllowList(cfg.blacklist.allow)
        if old.blacklist.allow == cfg.blacklist.allow:
            return []
        lifted = []
        for row in self.store.active_bans():
            if row.reason.startswith(ORIGIN_PREFIX) and self.allow.covering(row.ip):
                self.kernel.remove("ban", row.ip)
                self.store.delete_ban(row.ip, journal=False)
                self.store.queue_command("unban", row.ip)
                lifted.append(row.ip)
        return lifted

    def apply(self, changes: list[dict[str, Any]], *, live: bool = True,
              now: float | None = None) -> ApplyResult:
        """Apply valid changes (see ``valid_change``); ``live`` ones count towards the lag."""
        now = time.time() if now is None else now
        result = ApplyResult()
        bans: dict[str, dict[str, Any]] = {}
        known: dict[str, dict[str, Any]] = {}
        for change in changes:
            table = known if change["op"] == "known" else bans
            cur = table.get(change["ip"])
            if cur is None or supersedes(change, cur):
                table[change["ip"]] = change
            else:
                result.skipped += 1
        if self.cfg.guard.mode == "monitor":
            result.monitor = len(bans) + len(known)
            return result
        self._bans(bans, now, result)
        self._known(known, now, result)
        if live:
            done = time.time()
            result.lags = [done - bans[ip]["ts"] for ip in (*result.bans, *result.unbans)]
        return result

    def _bans(self, changes: dict[str, dict[str, Any]], now: float, result: ApplyResult) -> None:
        local = _local(self.store, "bans", list(changes))
        add: list[dict[str, Any]] = []
        for ip, change in changes.items():
            here = local.get(ip)
            if change["op"] == "unban":
                if here is None or here[1] <= now or here[0] > change["ts"]:
                    result.skipped += 1  # nothing here, or banned again after the unban
                    continue
                self.kernel.remove("ban", ip)
                self.store.delete_ban(ip, journal=False)
                self.store.queue_command("unban", ip)  # the workers' engines lift it too
                result.unbans.append(ip)
                continue
            if change["until"] <= now + 0.5 or (here is not None and here[1] >= change["until"] - 1
                                                and here[1] > now):
                result.skipped += 1
                continue
            covering = self.allow.covering(ip)
            if covering is not None:
                result.allowed.append((ip, covering, change["node"]))
                continue
            add.append(change)
        if not add:
            return
        full, failed = self.kernel.add_many("ban", [(c["ip"], c["until"] - now) for c in add])
        result.full += len(full)
        result.errors += len(failed)
        rows = []
        for c in add:
            reason = c["reason"] if c["reason"].startswith(ORIGIN_PREFIX) else \
                f"{ORIGIN_PREFIX}{c['node']}:{c['reason']}"
            # created = the origin's time of the ban, so a later unban compares right
            rows.append((c["ip"], c["kind"], reason, c["aor"], c["failures"], c["ts"], c["until"]))
        refused = {row[0] for row in _write(self.store, _PUT_BANS, rows)}
        for ip in refused:  # the kernel must not hold a ban the store knows nothing of
            self.kernel.remove("ban", ip)
        result.errors += len(refused)
        result.bans.extend(c["ip"] for c in add if c["ip"] not in refused)

    def _known(self, changes: dict[str, dict[str, Any]], now: float, result: ApplyResult) -> None:
        if not changes:
            return
        local = _local(self.store, "known", list(changes))
        add = [c for ip, c in changes.items()
               if c["until"] > now + 1 and (ip not in local or local[ip][1] < c["until"] - 1)]
        result.skipped += len(changes) - len(add)
        if not add:
            return
        full, failed = self.kernel.add_many("known", [(c["ip"], c["until"] - now) for c in add])
        result.full += len(full)
        result.errors += len(failed)
        refused = {row[0] for row in _write(self.store, _PUT_KNOWN,
                                            [(c["ip"], c["until"]) for c in add])}
        for ip in refused:
            self.kernel.remove("known", ip)
        result.errors += len(refused)
        result.known += len(add) - len(refused)


# ---------------------------------------------------------------- the link


def _decode(raw: Any, limit: int = MAX_ENTRY) -> Any:
    """JSON from Redis; None when it is not JSON or longer than ``limit`` bytes."""
    if isinstance(raw, bytes | str) and len(raw) > limit:
        return None
    try:
        return json.loads(raw)
    except (TypeError, ValueError, RecursionError):  # [[[[… nests past the recursion limit
        return None


def _entry(raw: Any, now: float) -> dict[str, Any]:
    """The change stored as one Redis hash value; BadEntry when it is not a good one."""
    if isinstance(raw, bytes | str) and len(raw) > MAX_ENTRY:
        raise BadEntry(f"longer than {MAX_ENTRY} bytes")
    return check_change(_decode(raw), now)


def _name(value: Any) -> str:
    """A Redis field name (a node or an address) for events and status, cut to MAX_FIELD."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text[:MAX_FIELD]


def _beat(raw: Any) -> dict[str, Any] | None:
    """A node's heartbeat as another node wrote it, each field bounded; None if not one."""
    data = _decode(raw)
    if not isinstance(data, dict):
        return None

    def count(key: str) -> int | None:
        value = data.get(key)
        return value if type(value) is int and 0 <= value <= 2**53 else None

    instance = data.get("instance")
    up_since = data.get("up_since")
    return {"ts": _number(data.get("ts")), "bans_set": count("bans_set"),
            "bans_store": count("bans_store"), "stopped": data.get("stopped") is True,
            "instance": instance[:MAX_FIELD] if isinstance(instance, str) else None,
            "up_since": _number(up_since) if up_since is not None else None}


def _number(value: Any) -> float:
    """A number another node wrote (heartbeat, stats); 0.0 when it is not a finite one."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return number if math.isfinite(number) else 0.0


class FleetLink:
    """The supervisor's connection to the fleet: ``load()`` once before the workers start,
    then ``start()`` a thread that pushes, applies, heartbeats and reconnects; ``stop()``."""

    def __init__(self, cfg: Config, events: EventLog, store_factory: Callable[[], Store],
                 sets_factory: Callable[[], Any], *,
                 client_factory: Callable[[], Any] | None = None) -> None:
        self.cfg = cfg
        self.events = events
        self.store_factory = store_factory
        self.sets_factory = sets_factory
        self.node = node_name(cfg)
        self.keys = Keys(cfg.fleet.channel)
        self.url = cfg.fleet.redis_url
        self.instance = secrets.token_hex(6)
        self.client_factory = client_factory or (lambda: connect(
            self.url, timeout=SOCKET_TIMEOUT, name=f"floodguard:{self.node}"))
        self.client: Any = None
        self.pubsub: Any = None
        self._merge: Any = None
        self._sweep_script: Any = None
        self.up = False
        self.up_since: float | None = None
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.reconnects = 0
        self.backoff = BACKOFF_FIRST
        self.retry_at = 0.0
        self.cursor: int | None = None
        self.counts: dict[str, int] = dict.fromkeys(
            ("pushed", "received", "bans", "unbans", "known", "allowed", "skipped", "monitor",
             "full", "errors", "invalid", "pulled"), 0)
        self.lag_counts = [0] * (len(LAG_BUCKETS) + 1)
        self.lag_sum = 0.0
        self.recent: deque[float] = deque(maxlen=RECENT_LAGS)
        self.nodes: dict[str, dict[str, Any]] = {}
        self.redis_counts: dict[str, Any] = {}
        self.local_counts: dict[str, int | None] = {"set": None, "store": None}
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self._need_pull = True
        self._need_push = True
        self._conflict_reported = False
        self._last_heartbeat = 0.0
        self._last_snapshot = 0.0
        self._next_sweep = 0.0
        self._sweep: dict[str, Any] | None = None
        self._applier: Applier | None = None

    # ------------------------------------------------------------ lifecycle

    def load(self, timeout: float = LOAD_TIMEOUT) -> bool:
        """Connect and apply the fleet's current bans (this thread; before the workers start).

        Gives up after ``timeout`` seconds (the link's thread finishes the job later) or at once
        when Redis cannot be reached; True when every fleet ban was loaded.
        """
        started = time.monotonic()
        store, sets = self.store_factory(), self.sets_factory()
        applier: Applier | None = None
        try:
            try:
                if hasattr(sets, "ensure"):
                    sets.ensure()
                self._load_cursor(store)
                applier = Applier(self.cfg, store, sets)
                self._connect()
                pulled = self._pull(applier, deadline=started + timeout)
            except Exception as exc:  # noqa: BLE001 — the guard starts whatever the fleet does
                self._down(exc)
                return False
            self._need_pull = pulled is None
            totals = pulled or {}
            self.events.emit("fleet_loaded", node=self.node, url=redact(self.url),
                             complete=pulled is not None, bans=totals.get("bans", 0),
                             known=totals.get("known", 0), allowed=totals.get("allowed", 0),
                             seconds=round(time.monotonic() - started, 3))
            return pulled is not None
        finally:
            if applier is not None:
                applier.close()
            store.close()
            with contextlib.suppress(Exception):
                sets.close()

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="floodguard-fleet", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join(timeout)

    def _run(self) -> None:
        store, sets = self.store_factory(), self.sets_factory()
        try:
            self._load_cursor(store)
            self._applier = Applier(self.cfg, store, sets)
            while not self.stopped.is_set():
                try:
                    self.step(store, sets)
                except Exception as exc:  # noqa: BLE001 — the fleet link never takes the guard down
                    self.events.emit("fleet_error", error=" ".join(str(exc).split()) or
                                     type(exc).__name__)
                    self._down(exc)
                    self.stopped.wait(1.0)
            self._finish(store, sets)
        finally:
            if self._applier is not None:
                self._applier.close()
            store.close()
            with contextlib.suppress(Exception):
                sets.close()
            self._close()

    def _finish(self, store: Store, sets: Any) -> None:
        """Last push (bounded by the socket timeout) and a goodbye heartbeat."""
        if self.up:
            try:
                self._push_journal(store, budget=1.0)
                self._heartbeat(store, sets, stopped=True)
            except _errors():
                pass
        self.up = False
        self._snapshot(store, force=True)

    # ------------------------------------------------------------ one step

    def step(self, store: Store, sets: Any) -> None:
        """One round: reconnect when due, else apply inbound and push outbound; housekeeping."""
        applier = self._applier
        if applier is None or applier.store is not store:
            if applier is not None:
                applier.close()
            applier = self._applier = Applier(self.cfg, store, sets)
        if self.cfg is not applier.cfg:
            self._reload(applier)
        if self.cursor is None:
            self._load_cursor(store)
        now = time.monotonic()
        if not self.up:
            if now >= self.retry_at:
                try:
                    if self.client is None:
                        self._connect()
                    self._resync(store, applier)
                except _errors() as exc:
                    self._down(exc)
            else:
                self.stopped.wait(min(POLL_SECONDS, self.retry_at - now))
        else:
            try:
                self._drain(applier)
                self._push_journal(store)
                if time.monotonic() - self._last_heartbeat >= HEARTBEAT_EVERY:
                    self._heartbeat(store, sets)
                self._sweep_step()
            except _errors() as exc:
                self._down(exc)
        self._snapshot(store)

    def _reload(self, applier: Applier) -> None:
        was_monitor = applier.cfg.guard.mode == "monitor"
        if applier.cfg.fleet != self.cfg.fleet:
            self.events.emit("fleet_reload", note="[fleet] changes take effect at restart")
        lifted = applier.reload(self.cfg)
        if lifted:
            self.events.emit("fleet_unban_allowed", ips=lifted[:EVENT_IPS], count=len(lifted))
        if was_monitor and self.cfg.guard.mode != "monitor":
            self._need_pull = True  # bans were only counted in monitor mode: fetch them now
            if self.up:
                self.up = False
                self.retry_at = 0.0

    # ------------------------------------------------------------ connection

    def _connect(self) -> None:
        self._close()
        client = self.client_factory()
        client.ping()
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.keys.channel)
        self.client, self.pubsub = client, pubsub
        self._merge = client.register_script(MERGE_LUA)
        self._sweep_script = client.register_script(SWEEP_LUA)

    def _close(self) -> None:
        for thing in (self.pubsub, self.client):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()
        self.client = self.pubsub = None

    def _down(self, exc: BaseException) -> None:
        error = " ".join(str(exc).split()) or type(exc).__name__
        if self.up or self.last_error is None:
            self.down_since = self.down_since or time.time()
            self.events.emit("fleet_down", node=self.node, url=redact(self.url), error=error)
        self.last_error = error
        self.up = False
        self._last_snapshot = 0.0  # status shows the change at once
        self._need_pull = True
        self._need_push = True
        self._sweep = None
        self._close()
        delay = self.backoff * (0.8 + 0.4 * secrets.randbelow(1000) / 1000)
        self.retry_at = time.monotonic() + delay
        self.backoff = min(BACKOFF_MAX, self.backoff * 2)

    def _resync(self, store: Store, applier: Applier) -> None:
        """After (re)connecting: push the journal backlog and whatever Redis lacks, pull what this
        node lacks. Subscribed first, so nothing published meanwhile is missed."""
        started = time.monotonic()
        was_down = self.down_since
        pushed = self._push_journal(store, budget=None)
        stated = self._push_state(store) if self._need_push else 0
        pulled = self._pull(applier) if self._need_pull else None
        self._need_push = False
        self._need_pull = False
        self.up = True
        self.up_since = time.time()
        self.backoff = BACKOFF_FIRST
        if self.last_error is not None:
            self.reconnects += 1
        self.events.emit("fleet_up", node=self.node, url=redact(self.url),
                         down_seconds=round(time.time() - was_down, 1) if was_down else None,
                         pushed=pushed + stated, pulled=(pulled or {}).get("bans", 0),
                         seconds=round(time.monotonic() - started, 3))
        self.last_error = None
        self.down_since = None
        self._last_snapshot = 0.0
        self._heartbeat(store, applier.kernel.sets)

    # ------------------------------------------------------------ outbound

    def _load_cursor(self, store: Store) -> None:
        if self.cursor is not None:
            return
        saved = store.load_snapshot(CURSOR_SNAPSHOT)
        if saved is not None and isinstance(saved[1], dict) and isinstance(
                saved[1].get("journal"), int):
            self.cursor = min(saved[1]["journal"], store.last_journal_id())
        else:
            # first start with a fleet: the active bans are pushed whole by the first re-sync
            self.cursor = store.last_journal_id()
            store.save_snapshot(CURSOR_SNAPSHOT, {"journal": self.cursor})

    def _push_journal(self, store: Store, budget: float | None = PUSH_BUDGET) -> int:
        """Send local changes made since the cursor; the cursor moves only once Redis has them."""
        assert self.cursor is not None
        started = time.monotonic()
        sent = 0
        while True:
            entries = store.journal_after(self.cursor, PUSH_BATCH)
            if not entries:
                break
            now = time.time()
            changes = [change_from_journal(e, self.node) for e in entries]
            self._send([c for c in changes if c["op"] == "unban" or c["until"] > now])
            self.cursor = entries[-1].id
            store.save_snapshot(CURSOR_SNAPSHOT, {"journal": self.cursor})
            sent += len(entries)
            if budget is not None and time.monotonic() - started > budget:
                break
        return sent

    def _send(self, changes: list[dict[str, Any]]) -> int:
        """Merge changes into Redis (which publishes what it accepted); returns that count."""
        accepted = 0
        for key, ops in ((self.keys.bans, ("ban", "unban")), (self.keys.known, ("known",))):
            mine = [c for c in changes if c["op"] in ops]
            for i in range(0, len(mine), PUSH_BATCH):
                chunk = json.dumps(mine[i:i + PUSH_BATCH], separators=(",", ":"))
                accepted += int(self._merge(keys=[key], args=[self.keys.channel, self.node,
                                                              chunk]))
        self.counts["pushed"] += accepted
        return accepted

    def _push_state(self, store: Store) -> int:
        """Push active local bans (and known sources) Redis lacks or holds shorter, unless a later
        unban in Redis says otherwise."""
        now = time.time()
        pending: list[dict[str, Any]] = [change_from_row(r, self.node)
                                         for r in store.active_bans(now=now)]
        pending += [{"op": "known", "ip": ip, "ts": now, "until": now + left, "node": self.node}
                    for ip, left in store.active_known(now=now)]
        out: list[dict[str, Any]] = []
        for key, ops in ((self.keys.bans, ("ban",)), (self.keys.known, ("known",))):
            mine = [c for c in pending if c["op"] in ops]
            for i in range(0, len(mine), SQL_CHUNK):
                chunk = mine[i:i + SQL_CHUNK]
                current = self.client.hmget(key, [c["ip"] for c in chunk])
                for change, raw in zip(chunk, current, strict=True):
                    cur = valid_change(_decode(raw), now) if raw is not None else None
                    if cur is None or supersedes(change, cur):
                        out.append(change)
        return self._send(out) if out else 0

    # ------------------------------------------------------------ inbound

    def _drain(self, applier: Applier) -> None:
        """Apply what other nodes published (waits up to POLL_SECONDS for the first message)."""
        changes: list[dict[str, Any]] = []
        origins: set[str] = set()
        bad: list[str] = []
        conn = self.pubsub.connection
        # Wait for data without reading, then read each message whole with the socket timeout:
        # a short read timeout would cut a large message in half under load.
        if conn is None or not conn.can_read(timeout=POLL_SECONDS):
            return
        taken = 0
        while True:
            message = self.pubsub.get_message(timeout=SOCKET_TIMEOUT)
            if message is not None and message.get("type") == "message":
                self._take(message.get("data"), changes, origins, bad)
            taken += 1
            if taken >= MAX_DRAIN or len(changes) >= PUSH_BATCH or not conn.can_read(timeout=0):
                break
        self._reject("pubsub", bad)
        if not changes:
            return
        self.counts["received"] += len(changes)
        result = applier.apply(changes, live=True)
        self._account(result)
        for lag in result.lags:
            self.lag_counts[bisect.bisect_left(LAG_BUCKETS, lag)] += 1
            self.lag_sum += lag
            self.recent.append(lag)
        if result.bans or result.unbans or result.known or result.full or result.errors:
            self.events.emit(
                "fleet_applied", origin=sorted(origins), bans=len(result.bans),
                unbans=len(result.unbans), known=result.known, skipped=result.skipped,
                full=result.full or None, errors=result.errors or None,
                lag_ms=round(max(result.lags) * 1000, 1) if result.lags else None,
                ips=(result.bans + result.unbans)[:EVENT_IPS])

    def _take(self, data: Any, changes: list[dict[str, Any]], origins: set[str],
              bad: list[str]) -> None:
        """The valid changes of one published message from another node; the bad ones (with
        why) go to ``bad``."""
        body = _decode(data, MAX_MESSAGE)
        if not isinstance(body, dict) or not isinstance(body.get("changes"), list):
            bad.append(f"message: not a JSON object with changes, or over {MAX_MESSAGE} bytes")
            return
        if body.get("node") == self.node:
            return  # this node's own changes, back from the channel
        origin = _name(body.get("node"))
        origins.add(origin)
        now = time.time()
        for raw in body["changes"]:
            try:
                changes.append(check_change(raw, now))
            except BadEntry as exc:
                ip = raw.get("ip") if isinstance(raw, dict) else None
                bad.append(f"from {origin}: {_shown(ip)}: {exc}")

    def _reject(self, where: str, bad: list[str]) -> None:
        """Count entries skipped as malformed and say so in one event (first few quoted)."""
        if not bad:
            return
        self.counts["invalid"] += len(bad)
        self.events.emit("fleet_invalid", where=where, count=len(bad),
                         examples=bad[:EVENT_BAD])

    def _account(self, result: ApplyResult, live: bool = True) -> None:
        self.counts["bans"] += len(result.bans)
        self.counts["unbans"] += len(result.unbans)
        self.counts["known"] += result.known
        self.counts["allowed"] += len(result.allowed)
        self.counts["skipped"] += result.skipped
        self.counts["monitor"] += result.monitor
        self.counts["full"] += result.full
        self.counts["errors"] += result.errors
        for ip, network, origin in result.allowed if live else ():
            # a re-sync finds the same ones again: reported once, when they arrive
            self.events.emit("fleet_ban_allowed", ip=ip, allow=network, origin=origin)
        if result.full:
            self.events.emit("fleet_set_full", entries=result.full)

    def _pull(self, applier: Applier, deadline: float | None = None) -> dict[str, int] | None:
        """Apply every fleet entry this node lacks; None when the deadline cut it short."""
        totals = {"bans": 0, "unbans": 0, "known": 0, "allowed": 0}
        for key in (self.keys.bans, self.keys.known):
            cursor = 0
            while True:
                cursor, page = self.client.hscan(key, cursor, count=1000)
                now = time.time()
                changes: list[dict[str, Any]] = []
                bad: list[str] = []
                for name, raw in page.items():
                    try:
                        changes.append(_entry(raw, now))
                    except BadEntry as exc:
                        bad.append(f"{_shown(_name(name))}: {exc}")
                self._reject(key, bad)
                result = applier.apply(changes, live=False)
                self._account(result, live=False)
                totals["bans"] += len(result.bans)
                totals["unbans"] += len(result.unbans)
                totals["known"] += result.known
                totals["allowed"] += len(result.allowed)
                if cursor == 0:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    return None
        self.counts["pulled"] += totals["bans"] + totals["unbans"] + totals["known"]
        return totals

    # ------------------------------------------------------------ housekeeping

    def _heartbeat(self, store: Store, sets: Any, stopped: bool = False) -> None:
        self._last_heartbeat = time.monotonic()
        now = time.time()
        self.local_counts = {"set": count_set(sets), "store": count_store_bans(store, now)}
        beat = {"ts": now, "instance": self.instance, "bans_set": self.local_counts["set"],
                "bans_store": self.local_counts["store"], "up_since": self.up_since,
                "stopped": stopped}
        self.client.hset(self.keys.nodes, self.node, json.dumps(beat))
        nodes = {}
        for name, raw in self.client.hgetall(self.keys.nodes).items():
            data = _beat(raw)
            if data is not None:
                nodes[_name(name)] = data
        self.nodes = nodes
        mine = nodes.get(self.node, {})
        if mine.get("instance") not in (None, self.instance) and not self._conflict_reported:
            self._conflict_reported = True
            self.events.emit("fleet_node_conflict", node=self.node,
                             note="another floodguard uses this [fleet] node name")
        stats = self.client.hgetall(self.keys.stats)
        self.redis_counts = {_name(k): _number(v) for k, v in stats.items()}
        self.redis_counts["entries"] = float(self.client.hlen(self.keys.bans))

    def _sweep_step(self) -> None:
        """Delete expired entries, one page per step, on one node at a time; count the rest."""
        if self._sweep is None:
            if time.monotonic() < self._next_sweep:
                return
            self._next_sweep = time.monotonic() + SWEEP_EVERY
            if not self.client.set(self.keys.sweeper, self.node, nx=True, ex=int(SWEEP_EVERY)):
                return
            self._sweep = {"keys": [self.keys.bans, self.keys.known], "cursor": 0,
                           "counts": {"bans": 0, "tombstones": 0, "known": 0, "deleted": 0}}
        sweep = self._sweep
        key = sweep["keys"][0]
        cursor, page = self.client.hscan(key, sweep["cursor"], count=SWEEP_PAGE)
        now = time.time()
        dead: list[Any] = []
        for ip, raw in page.items():
            change = valid_change(_decode(raw), now)
            if change is None or change["until"] < now - SWEEP_GRACE:
                dead += [ip, raw]
            elif change["op"] == "ban":
                sweep["counts"]["bans"] += 1
            elif change["op"] == "unban":
                sweep["counts"]["tombstones"] += 1
            else:
                sweep["counts"]["known"] += 1
        if dead:
            sweep["counts"]["deleted"] += int(self._sweep_script(keys=[key], args=dead))
        sweep["cursor"] = cursor
        if cursor != 0:
            return
        sweep["keys"].pop(0)
        if sweep["keys"]:
            return
        for name, raw in self.client.hgetall(self.keys.nodes).items():
            data = _decode(raw)
            if not isinstance(data, dict) or now - _number(data.get("ts")) > NODE_FORGET:
                self.client.hdel(self.keys.nodes, name)
        self.client.hset(self.keys.stats, mapping={**sweep["counts"], "ts": now})
        self._sweep = None

    def lag_summary(self) -> dict[str, Any]:
        recent = sorted(self.recent)

        def quantile(q: float) -> float | None:
            return round(recent[min(len(recent) - 1, int(q * len(recent)))], 4) \
                if recent else None

        return {"buckets": list(LAG_BUCKETS), "counts": list(self.lag_counts),
                "sum": self.lag_sum, "p50": quantile(0.5), "p99": quantile(0.99),
                "max": round(recent[-1], 4) if recent else None, "window": len(recent)}

    def state(self) -> dict[str, Any]:
        """What ``floodguard status``, the metrics and ``fleet status`` show about the link."""
        now = time.time()
        return {
            "node": self.node, "instance": self.instance, "url": redact(self.url),
            "channel": self.keys.channel, "up": self.up, "up_since": self.up_since,
            "down_since": self.down_since, "last_error": self.last_error,
            "reconnects": self.reconnects, "counts": dict(self.counts),
            "lag": self.lag_summary(), "cursor": self.cursor,
            "local": dict(self.local_counts), "redis": dict(self.redis_counts),
            "monitor": self.cfg.guard.mode == "monitor",
            "nodes": {name: {"age": round(now - _number(d.get("ts")), 1),
                             "bans_set": d.get("bans_set"), "bans_store": d.get("bans_store"),
                             "stopped": bool(d.get("stopped"))}
                      for name, d in sorted(self.nodes.items())},
        }

    def _snapshot(self, store: Store, force: bool = False) -> None:
        if not force and time.monotonic() - self._last_snapshot < SNAPSHOT_EVERY:
            return
        self._last_snapshot = time.monotonic()
        data = self.state()
        data["journal_backlog"] = max(0, store.last_journal_id() - (self.cursor or 0))
        store.save_snapshot(SNAPSHOT, data)


# ---------------------------------------------------------------- floodguard fleet status


def report(cfg: Config, store: Store, sets: Any | None, *,
           timeout: float = 2.0) -> dict[str, Any]:
    """``floodguard fleet status``: the link as the running guard last saw it, and Redis and
    this node's bans compared now (Redis read directly)."""
    if not cfg.fleet.redis_url:
        raise FleetError("no fleet configured ([fleet] redis_url is empty)")
    now = time.time()
    keys = Keys(cfg.fleet.channel)
    node = node_name(cfg)
    link = None
    snap = store.load_snapshot(SNAPSHOT)
    if snap is not None and isinstance(snap[1], dict):
        saved, link = snap
        link["age"] = round(now - saved, 1)
        link["running"] = now - saved < 5.0
    local_set: set[str] | None = None
    if sets is not None:
        try:
            local_set = {ip for ip, _ in sets.list("ban")}
        except Exception:  # noqa: BLE001 — the kernel view is optional here
            local_set = None
    store_ips = {row.ip for row in store.active_bans(now=now)}
    data: dict[str, Any] = {
        "node": node, "url": redact(cfg.fleet.redis_url), "channel": keys.channel, "link": link,
        "local": {"set": len(local_set) if local_set is not None else None,
                  "store": len(store_ips)},
    }
    try:
        client = connect(cfg.fleet.redis_url, timeout=timeout, name=f"floodguard-cli:{node}")
        try:
            data["nodes"] = _nodes(client, keys, now)
            fleet: dict[str, dict[str, Any]] = {}
            tombstones = 0
            for _ip, raw in client.hscan_iter(keys.bans, count=1000):
                change = valid_change(_decode(raw), now)
                if change is None or change["until"] <= now:
                    continue
                if change["op"] == "unban":
                    tombstones += 1
                else:
                    fleet[change["ip"]] = change
            known = client.hlen(keys.known)
        finally:
            client.close()
    except _errors() as exc:
        data["redis"] = {"ok": False, "error": " ".join(str(exc).split())}
        return data
    allow = AllowList(cfg.blacklist.allow)
    allowed = sorted(ip for ip in fleet if allow.covering(ip))
    here = local_set if local_set is not None else store_ips
    missing = sorted(ip for ip in fleet if ip not in here and ip not in allowed)
    data["redis"] = {"ok": True, "bans": len(fleet), "tombstones": tombstones, "known": known}
    data["compare"] = {
        "against": "set" if local_set is not None else "store",
        "missing_here": len(missing), "missing_sample": missing[:10],
        "allow_listed": len(allowed), "allow_listed_sample": allowed[:10],
        "only_here": len(here - set(fleet)),
    }
    return data


def _nodes(client: Any, keys: Keys, now: float) -> list[dict[str, Any]]:
    out = []
    for name, raw in client.hgetall(keys.nodes).items():
        beat = _beat(raw)
        if beat is None:
            continue
        age = now - _number(beat.get("ts"))
        out.append({"node": _name(name),
                    "age": round(age, 1), "alive": age < NODE_ALIVE and not beat.get("stopped"),
                    "stopped": bool(beat.get("stopped")), "bans_set": beat.get("bans_set"),
                    "bans_store": beat.get("bans_store")})
    return sorted(out, key=lambda n: n["node"])
