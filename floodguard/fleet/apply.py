"""Fleet changes applied to this node: its allow list, its kernel sets (``KernelWriter``) and its
SQLite store (raw SQL, many rows per transaction), with the merge rules (``Applier``).

Rows written here are not journalled, so the fleet's changes are not echoed back; a row SQLite
refuses is skipped alone (``_write``). The node's own allow list always wins: a fleet ban of an
allow-listed address is reported and never enters the kernel.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from floodguard import addr
from floodguard.config import Config
from floodguard.fleet.wire import ORIGIN_PREFIX, supersedes
from floodguard.kernel.rules import IPSET_MAX_TIMEOUT
from floodguard.store import Store

SQL_CHUNK = 500  # addresses per SQL statement or transaction

AllowList = addr.Networks  # blacklist.allow parsed once; ``covering(ip)`` as bans.allowed_by


class SetWriter(Protocol):
    """Adds and removes entries of floodguard's sets (``NetlinkSetWriter``, a set manager)."""

    def add(self, kind: str, ip: str, timeout: float | None = None, /) -> None: ...

    def remove(self, kind: str, ip: str, /) -> bool: ...

    def close(self) -> None: ...


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
    """Writes the fleet's set entries, many per batch, through ``writer_factory(sets)``."""

    def __init__(self, sets: Any, writer_factory: WriterFactory = netlink_writer) -> None:
        self.sets = sets
        self.writer = writer_factory(sets)

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

    def __init__(self, cfg: Config, store: Store, sets: Any, *,
                 writer_factory: WriterFactory = netlink_writer) -> None:
        self.store = store
        self.kernel = KernelWriter(sets, writer_factory)
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
