"""Fleet changes applied to this node with the merge rules (``Applier``), through the node's
enforcement path (``enforce.Enforcer``, ``by="fleet"``): kernel sets, store rows (many per
transaction), guard commands, connections cut and events, as every other ban path.

Rows written here are not journalled, so the fleet's changes are not echoed back; a row SQLite
refuses is skipped alone. The node's own allow list always wins: a fleet ban of an
allow-listed address is reported and never enters the kernel. That list is the config's and the
run-time one (``floodguard allow``), which the fleet shares: an ``allow`` from another node is
entered here (store, kernel allow set, the guard told) and lifts this node's bans it covers.

In monitor mode (``[guard] mode = "monitor"`` or ``run --monitor``) nothing is applied: the
fleet's bans become ``would_ban`` events (``by: "fleet"``; ``would_bans`` for a large batch),
unbans, known-good marks, allow-list and endpoint changes are only counted
(``ApplyResult.monitor``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from floodguard import addr, allow_list
from floodguard.config import Config
from floodguard.enforce import Enforcer, Forget, SetWriter
from floodguard.events import EventLog
from floodguard.fleet.apply_endpoints import apply_endpoints
from floodguard.fleet.wire import ENDPOINT_OPS, LIFTS, ORIGIN_PREFIX, horizon, supersedes
from floodguard.store import SQL_CHUNK, BanRow, Store

__all__ = ["SQL_CHUNK", "AllowList", "ApplyResult", "Applier", "KernelWriter", "SetWriter",
           "WriterFactory", "count_set", "count_store_bans", "netlink_writer"]

AllowList = addr.Networks  # blacklist.allow parsed once; ``covering(ip)`` as bans.allowed_by

WriterFactory = Callable[[Any], SetWriter]


def netlink_writer(sets: Any) -> SetWriter:
    """The writer for a set manager's sets: ``kernel.ipset_netlink`` (one raw netlink message per
    entry, ~11 µs here; pyroute2 costs ~0.5 ms an entry: 10,000 bans/s would need five cores).
    Without the raw netlink writer, the set manager itself: its slow path still works."""
    from floodguard.kernel import KernelError

    try:
        from floodguard.kernel.ipset_netlink import NetlinkSetWriter

        return NetlinkSetWriter(sets.specs)
    except (KernelError, ImportError):
        return sets


class KernelWriter:
    """The set writer for a set manager's sets (``writer_factory(sets)``), closed with it."""

    def __init__(self, sets: Any, writer_factory: WriterFactory = netlink_writer) -> None:
        self.sets = sets
        self.writer = writer_factory(sets)

    def close(self) -> None:
        if self.writer is not self.sets:
            with contextlib.suppress(Exception):
                self.writer.close()


def count_store_bans(store: Store, now: float) -> int:
    return store.count_bans(now)


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
    allows: list[str] = field(default_factory=list)  # run-time allow-list entries added
    disallows: list[str] = field(default_factory=list)  # and removed
    endpoints: list[str] = field(default_factory=list)  # pairs, suspensions, holds (their keys)
    skipped: int = 0  # already as long here, older than what is here, or expired
    monitor: int = 0  # not applied: monitor mode
    full: int = 0
    errors: int = 0
    lags: list[float] = field(default_factory=list)


class Applier:
    """Applies fleet changes to this node's kernel sets and store, with the merge rules."""

    def __init__(self, cfg: Config, store: Store, sets: Any, *,
                 writer_factory: WriterFactory = netlink_writer,
                 events: EventLog | None = None, forget: Forget | None = None) -> None:
        """``forget`` cuts banned sources' connections (``conntrack.forget_connections``)."""
        self.store = store
        self.kernel = KernelWriter(sets, writer_factory)
        events = events or EventLog()
        self.enforce = Enforcer(store, self.kernel.writer, events, by="fleet", forget=forget)
        self.cfg = cfg
        self.allow = self._allow_list()

    def _allow_list(self) -> AllowList:
        """The config's allow list and the store's run-time one, as in force now."""
        return AllowList(allow_list.effective(self.cfg, self.store).blacklist.allow)

    def close(self) -> None:
        self.kernel.close()

    def reload(self, cfg: Config) -> list[str]:
        """New settings; lifts (here only) fleet bans the new allow list covers."""
        old = self.cfg
        self.cfg = cfg
        self.allow = self._allow_list()
        if old.blacklist.allow == cfg.blacklist.allow:
            return []
        lifted = []
        for row in self.store.active_bans():
            if row.reason.startswith(ORIGIN_PREFIX) and self.allow.covering(row.ip):
                self.enforce.unban(row.ip, reason="allow-listed")
                lifted.append(row.ip)
        return lifted

    def apply(self, changes: list[dict[str, Any]], *, live: bool = True,
              now: float | None = None) -> ApplyResult:
        """Apply valid changes (see ``valid_change``); ``live`` ones count towards the lag."""
        now = time.time() if now is None else now
        result = ApplyResult()
        bans: dict[str, dict[str, Any]] = {}
        known: dict[str, dict[str, Any]] = {}
        allowing: dict[str, dict[str, Any]] = {}
        endpoints: dict[str, dict[str, Any]] = {}
        for change in changes:
            op = change["op"]
            table = (known if op == "known" else allowing if op in ("allow", "disallow")
                     else endpoints if op in ENDPOINT_OPS else bans)
            key = change["key"] if "key" in change else change["ip"]
            cur = table.get(key)
            if cur is None or supersedes(change, cur):
                table[key] = change
            else:
                result.skipped += 1
        if self.cfg.guard.mode == "monitor":
            result.monitor = (len(known) + len(allowing) + len(endpoints)
                              + sum(c["op"] == "unban" for c in bans.values()))
            bans = {ip: c for ip, c in bans.items() if c["op"] != "unban"}
            known, allowing, endpoints = {}, {}, {}
        else:
            self._allows(allowing, now, result)
            self.allow = self._allow_list()  # also what `floodguard allow` changed here meanwhile
        self._bans(bans, now, result)
        self._known(known, now, result)
        if endpoints:
            result.endpoints, skipped = apply_endpoints(self.store, self.enforce, endpoints, now)
            result.skipped += skipped
        if live:
            done = time.time()
            changed = {*result.bans, *result.unbans}
            result.lags = [done - change["ts"] for ip, change in bans.items() if ip in changed]
            result.lags += [done - allowing[net]["ts"]
                            for net in (*result.allows, *result.disallows)]
            result.lags += [done - endpoints[key]["ts"] for key in result.endpoints]
        return result

    def _bans(self, changes: dict[str, dict[str, Any]], now: float, result: ApplyResult) -> None:
        local = self.store.ban_spans(list(changes))
        add: list[BanRow] = []
        for ip, change in changes.items():
            here = local.get(ip)
            if change["op"] == "unban":
                if here is None or here[1] <= now or here[0] > change["ts"]:
                    result.skipped += 1  # nothing here, or banned again after the unban
                    continue
                self.enforce.unban(ip, reason=change.get("reason") or "fleet")
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
            reason = change["reason"] if change["reason"].startswith(ORIGIN_PREFIX) else \
                f"{ORIGIN_PREFIX}{change['node']}:{change['reason']}"
            # created = the origin's time of the ban, so a later unban compares right
            add.append(BanRow(ip, change["kind"], reason, change["aor"], change["failures"],
                              change["ts"], change["until"]))
        if not add:
            return
        if self.cfg.guard.mode == "monitor":
            result.monitor += len(self.enforce.would_ban_many(add, now=now))
            return
        done = self.enforce.ban_many(add, now=now)
        result.full += len(done.full)
        result.errors += len(done.failed)
        result.bans.extend(done.done)

    def _allows(self, changes: dict[str, dict[str, Any]], now: float,
                result: ApplyResult) -> None:
        """Run-time allow-list changes: an allow enters the store and the kernel allow set and
        lifts this node's bans inside it; a disallow removes an allow made before it."""
        if not changes:
            return
        local = self.store.allow_spans(list(changes))
        static = allow_list.static_networks(self.cfg)
        prefix = self.cfg.limits.ipv6_prefix
        for net, change in changes.items():
            here = local.get(net)
            if change["op"] in LIFTS:
                if here is None or here[0] > change["ts"]:
                    result.skipped += 1  # nothing here, or allowed again after the removal
                    continue
                self.enforce.disallow(net, reason="fleet", static=net in static)
                result.disallows.append(net)
                continue
            ends = horizon(change)
            here_ends = None if here is None else (
                float("inf") if here[1] is None else here[1])
            if ends <= now or (here_ends is not None and here_ends >= ends and here_ends > now):
                result.skipped += 1
                continue
            reason = change["reason"] if change["reason"].startswith(ORIGIN_PREFIX) else \
                f"{ORIGIN_PREFIX}{change['node']}:{change['reason']}"
            self.enforce.allow(net, None, reason=reason,
                               until=None if ends == float("inf") else ends,
                               created=change["ts"])
            result.allows.append(net)
            network = addr.parse_network(net)
            for row in self.store.active_bans(now=now):
                if addr.key_in(row.ip, network, prefix):
                    self.enforce.unban(row.ip, reason="allow-listed")
                    result.unbans.append(row.ip)

    def _known(self, changes: dict[str, dict[str, Any]], now: float, result: ApplyResult) -> None:
        if not changes:
            return
        local = self.store.known_untils(list(changes))
        add = [(ip, c["until"]) for ip, c in changes.items()
               if c["until"] > now + 1 and (ip not in local or local[ip] < c["until"] - 1)]
        result.skipped += len(changes) - len(add)
        if not add:
            return
        done = self.enforce.known_many(add, now=now)
        result.full += len(done.full)
        result.errors += len(done.failed)
        result.known += len(done.done)
