"""SQLite state (WAL): bans, known-good sources, the change journal and policy snapshots; the
endpoint tables (known-good pairs, endpoint suspensions, holds) are in ``store_endpoints``, the
run-time allow list in ``store_allows``, operator commands and registrar reports in
``store_commands``.

Times stored here are wall-clock seconds (``time.time()``), so state survives a reboot; the policy
engine works in monotonic time and the guard converts at the boundary.

A damaged file never keeps a command down: opening (``store_open``) checks the database
(``PRAGMA quick_check``) and, when SQLite says it is not a database or is malformed, moves it and
its ``-wal``/``-shm`` aside to ``<path>.corrupt-<UTC time>``, starts a fresh one, emits
``state_corrupt`` and records the move in the fresh database for ``floodguard status``. Saved
bans and registrations in the damaged file are lost (they stay in the moved file for inspection).

The tables and their upgrade path (``PRAGMA user_version``, one migration step per change) are
in ``store_schema``: an older store is upgraded on open (``state_upgraded``), a newer one is
refused (StoreTooNew) and left as it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from floodguard.events import EventLog
from floodguard.store_allows import AllowRow as AllowRow
from floodguard.store_allows import AllowTables
from floodguard.store_commands import Command as Command
from floodguard.store_commands import CommandTables
from floodguard.store_commands import Report as Report
from floodguard.store_commands import put_report as put_report
from floodguard.store_endpoints import HOLD_ACCOUNT as HOLD_ACCOUNT
from floodguard.store_endpoints import HOLD_LOCKDOWN as HOLD_LOCKDOWN
from floodguard.store_endpoints import EndpointTables
from floodguard.store_endpoints import HoldRow as HoldRow
from floodguard.store_endpoints import PairBanRow as PairBanRow
from floodguard.store_open import CORRUPT_SNAPSHOT as CORRUPT_SNAPSHOT
from floodguard.store_open import StoreCorrupt as StoreCorrupt
from floodguard.store_open import connect
from floodguard.store_open import is_corruption as is_corruption
from floodguard.store_open import open_recovering as open_recovering
from floodguard.store_open import quarantined as quarantined
from floodguard.store_rows import TimedRow
from floodguard.store_schema import StoreError as StoreError
from floodguard.store_schema import StoreTooNew as StoreTooNew

JOURNAL_KEEP = 7 * 86400  # seconds of local changes kept for a fleet link that was away

# Registrar reports are read within a second by a running guard; older ones only wait for one
# that is down, and a guard that was down an hour has no use for them.
REPORTS_KEEP = 3600.0
SQL_CHUNK = 500  # rows per transaction in the bulk writes
# a row SQLite cannot take (e.g. an integer over 64 bits); "database is locked" and the like are
# not among them: they propagate, and the caller retries the whole batch later
_ROW_ERRORS = (OverflowError, ValueError, TypeError, sqlite3.InterfaceError,
               sqlite3.IntegrityError)


@dataclass(frozen=True)
class BanRow(TimedRow):
    """A persisted ban or suspension."""

    ip: str
    kind: str
    reason: str
    aor: str | None
    failures: int
    created: float
    until: float


@dataclass(frozen=True)
class JournalEntry:
    """A local change to bans or known-good sources, in order (for the fleet link)."""

    id: int
    op: str  # "ban", "unban", "known", "allow" or "disallow" (ip: the network)
    ip: str
    kind: str | None
    reason: str | None
    aor: str | None
    failures: int | None
    until: float | None
    created: float


class Store(EndpointTables, AllowTables, CommandTables):
    """A small synchronous SQLite store; one per process.

    ``recover`` (the default) replaces a damaged database by a fresh one (see the module
    docstring) and emits ``state_corrupt`` on ``events`` (default: JSON lines on stderr);
    ``recover=False`` raises StoreCorrupt instead, for readers that must not move files.
    ``recovered`` is the record when this open moved a damaged file aside, else None.
    """

    def __init__(self, path: str | os.PathLike[str], *, events: EventLog | None = None,
                 recover: bool = True) -> None:
        self.path = Path(path)
        self.recovered: dict[str, Any] | None = None
        try:
            if str(path) == ":memory:":
                self.db = connect(path)
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if recover:
                self.db, self.recovered = open_recovering(self.path, events)
            else:
                self.db = connect(self.path, events=events)
        except StoreCorrupt as exc:
            raise StoreCorrupt(f"{path}: state database is damaged: {exc}") from None
        except (OSError, sqlite3.Error) as exc:
            if is_corruption(exc):
                raise StoreCorrupt(f"{path}: state database is damaged: {exc}") from None
            raise StoreError(f"{path}: cannot open state database: {exc}") from None

    def close(self) -> None:
        self.db.close()

    def defer_checkpoints(self) -> None:
        """No automatic WAL checkpoints (their fsyncs stall the writer): the owner calls
        checkpoint() off the hot path instead."""
        self.db.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint(self) -> None:
        with contextlib.suppress(sqlite3.OperationalError):  # busy: the next one will do
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # bans -----------------------------------------------------------------

    def put_ban(
        self, ip: str, kind: str, reason: str, seconds: float, *, aor: str | None = None,
        failures: int = 0, now: float | None = None, journal: bool = True,
    ) -> BanRow:
        """Record a ban; ``journal=False`` for bans that came from elsewhere (the fleet)."""
        now = time.time() if now is None else now
        row = BanRow(ip, kind, reason, aor, failures, now, now + seconds)
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT OR REPLACE INTO bans(ip, kind, reason, aor, failures, created, until) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row.ip, row.kind, row.reason, row.aor, row.failures, row.created, row.until),
            )
            if journal:
                self._journal("ban", ip, kind, reason, aor, failures, row.until, now)
        return row

    def delete_ban(self, ip: str, *, journal: bool = True) -> bool:
        with self.db:
            self.db.execute("BEGIN")
            found = self.db.execute("DELETE FROM bans WHERE ip = ?", (ip,)).rowcount > 0
            if journal:
                self._journal("unban", ip, None, None, None, None, None, time.time())
        return found

    def _journal(self, op: str, ip: str, kind: str | None, reason: str | None, aor: str | None,
                 failures: int | None, until: float | None, now: float) -> None:
        self.db.execute(
            "INSERT INTO journal(op, ip, kind, reason, aor, failures, until, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (op, ip, kind, reason, aor, failures, until, now))

    def journal_after(self, after: int, limit: int = 10000) -> list[JournalEntry]:
        """Local changes with id > after, oldest first."""
        cur = self.db.execute(
            "SELECT id, op, ip, kind, reason, aor, failures, until, created FROM journal "
            "WHERE id > ? ORDER BY id LIMIT ?", (after, limit))
        return [JournalEntry(*r) for r in cur.fetchall()]

    def journal_of(self, *, ip: str | None = None, user: str | None = None,
                   domain: str | None = None, limit: int = 20) -> list[JournalEntry]:
        """Newest first: the journal's entries about source `ip`, or about the account
        user[@domain] (any domain when `domain` is None); case-insensitive account names."""
        if ip is not None:
            where, args = "ip = ?", [ip]
        elif user is not None:
            exact = user.lower() + ("@" + domain.lower() if domain else "")
            escaped = exact.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            if domain:
                where, args = "lower(aor) = ?", [exact]
            else:
                where = "(lower(aor) = ? OR lower(aor) LIKE ? ESCAPE '\\')"
                args = [exact, escaped + "@%"]
        else:
            raise ValueError("journal_of needs ip or user")
        # bans and unbans: the endpoint entries (pairs, suspensions, holds) are the fleet's,
        # explain reads those from their own tables
        cur = self.db.execute(
            "SELECT id, op, ip, kind, reason, aor, failures, until, created FROM journal "
            f"WHERE {where} AND op IN ('ban', 'unban') ORDER BY id DESC LIMIT ?",
            (*args, limit))
        return [JournalEntry(*r) for r in cur.fetchall()]

    def last_journal_id(self) -> int:
        found = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM journal").fetchone()
        return int(found[0])

    def trim_journal(self, older_than: float) -> None:
        self.db.execute("DELETE FROM journal WHERE created < ?", (older_than,))

    def put_bans(self, rows: list[BanRow], *, journal: bool = True) -> list[str]:
        """Record many bans in few transactions (``put_ban`` commits each: ~75 µs a ban);
        returns the addresses SQLite refused, each tried alone after its chunk failed, so one
        bad row never blocks the others."""
        refused: list[str] = []
        for i in range(0, len(rows), SQL_CHUNK):
            chunk = rows[i:i + SQL_CHUNK]
            try:
                with self.db:
                    self.db.execute("BEGIN")
                    for row in chunk:
                        self._put_ban_row(row, journal)
            except _ROW_ERRORS:
                for row in chunk:
                    try:
                        with self.db:
                            self.db.execute("BEGIN")
                            self._put_ban_row(row, journal)
                    except _ROW_ERRORS:
                        refused.append(row.ip)
        return refused

    def _put_ban_row(self, row: BanRow, journal: bool) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO bans(ip, kind, reason, aor, failures, created, until) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (row.ip, row.kind, row.reason, row.aor, row.failures, row.created, row.until))
        if journal:
            self._journal("ban", row.ip, row.kind, row.reason, row.aor, row.failures, row.until,
                          row.created)

    def ban_spans(self, ips: list[str]) -> dict[str, tuple[float, float]]:
        """ip -> (created, until) of the ban rows (expired ones included) for ``ips``."""
        return self._spans("SELECT ip, created, until FROM bans", ips)

    def known_untils(self, ips: list[str]) -> dict[str, float]:
        """ip -> until of the known-good rows (expired ones included) for ``ips``."""
        return {ip: until for ip, (until, _) in
                self._spans("SELECT ip, until, until FROM known", ips).items()}

    def _spans(self, select: str, ips: list[str]) -> dict[str, tuple[float, float]]:
        out: dict[str, tuple[float, float]] = {}
        for i in range(0, len(ips), SQL_CHUNK):
            chunk = ips[i:i + SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            for ip, first, second in self.db.execute(
                    f"{select} WHERE ip IN ({marks})", chunk):  # noqa: S608 — marks only
                out[ip] = (first, second)
        return out

    def count_bans(self, now: float | None = None) -> int:
        """Active bans and suspensions."""
        now = time.time() if now is None else now
        found = self.db.execute("SELECT COUNT(*) FROM bans WHERE until > ?", (now,)).fetchone()
        return int(found[0])

    def get_ban(self, ip: str, now: float | None = None) -> BanRow | None:
        now = time.time() if now is None else now
        cur = self.db.execute(
            "SELECT ip, kind, reason, aor, failures, created, until FROM bans "
            "WHERE ip = ? AND until > ?", (ip, now))
        found = cur.fetchone()
        return BanRow(*found) if found else None

    def active_bans(self, now: float | None = None) -> list[BanRow]:
        now = time.time() if now is None else now
        cur = self.db.execute(
            "SELECT ip, kind, reason, aor, failures, created, until FROM bans "
            "WHERE until > ? ORDER BY until", (now,))
        return [BanRow(*r) for r in cur.fetchall()]

    def prune(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.db.execute("DELETE FROM bans WHERE until <= ?", (now,))
        self.db.execute("DELETE FROM known WHERE until <= ?", (now,))
        self.db.execute("DELETE FROM known_pairs WHERE until <= ?", (now,))
        self.db.execute("DELETE FROM pair_bans WHERE until <= ?", (now - JOURNAL_KEEP,))
        self.db.execute("DELETE FROM holds WHERE until <= ?", (now,))
        self.db.execute("DELETE FROM journal WHERE created < ?", (now - JOURNAL_KEEP,))
        self.db.execute("DELETE FROM reports WHERE created < ?", (now - REPORTS_KEEP,))
        self.prune_allows(now)

    # known-good -------------------------------------------------------------

    def put_known(self, ip: str, seconds: float, now: float | None = None, *,
                  journal: bool = True) -> None:
        now = time.time() if now is None else now
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT OR REPLACE INTO known(ip, until) VALUES (?, ?)", (ip, now + seconds))
            if journal:
                self._journal("known", ip, None, None, None, None, now + seconds, now)

    def put_known_many(self, items: list[tuple[str, float]], *, now: float | None = None,
                       journal: bool = True) -> list[str]:
        """Record many (address, until) known-good marks in few transactions; returns the
        addresses SQLite refused (as ``put_bans``)."""
        now = time.time() if now is None else now
        refused: list[str] = []

        def put(ip: str, until: float) -> None:
            self.db.execute("INSERT OR REPLACE INTO known(ip, until) VALUES (?, ?)", (ip, until))
            if journal:
                self._journal("known", ip, None, None, None, None, until, now)

        for i in range(0, len(items), SQL_CHUNK):
            chunk = items[i:i + SQL_CHUNK]
            try:
                with self.db:
                    self.db.execute("BEGIN")
                    for ip, until in chunk:
                        put(ip, until)
            except _ROW_ERRORS:
                for ip, until in chunk:
                    try:
                        with self.db:
                            self.db.execute("BEGIN")
                            put(ip, until)
                    except _ROW_ERRORS:
                        refused.append(ip)
        return refused

    def active_known(self, now: float | None = None) -> list[tuple[str, float]]:
        now = time.time() if now is None else now
        cur = self.db.execute("SELECT ip, until FROM known WHERE until > ?", (now,))
        return [(ip, until - now) for ip, until in cur.fetchall()]

    # snapshots ----------------------------------------------------------------

    def save_snapshot(self, name: str, data: Any, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.db.execute(
            "INSERT OR REPLACE INTO snapshots(name, saved, data) VALUES (?, ?, ?)",
            (name, now, json.dumps(data)))

    def load_snapshot(self, name: str) -> tuple[float, Any] | None:
        found = self.db.execute(
            "SELECT saved, data FROM snapshots WHERE name = ?", (name,)).fetchone()
        if not found:
            return None
        try:
            return found[0], json.loads(found[1])
        except ValueError:
            return None

    def snapshot_names(self, prefix: str = "") -> list[str]:
        """The names of the snapshots whose name starts with ``prefix``, sorted."""
        cur = self.db.execute(
            "SELECT name FROM snapshots WHERE substr(name, 1, ?) = ? ORDER BY name",
            (len(prefix), prefix))
        return [name for (name,) in cur.fetchall()]

    def counter_snapshots(self) -> dict[str, tuple[float, dict[str, Any]]]:
        """Each guard worker's published counters (``counters-<engine>``): engine name ->
        (saved, data)."""
        out: dict[str, tuple[float, dict[str, Any]]] = {}
        for name in self.snapshot_names("counters-"):
            snap = self.load_snapshot(name)
            if snap is not None and isinstance(snap[1], dict):
                out[name.removeprefix("counters-")] = (snap[0], snap[1])
        return out

    def registrations(self, now: float | None = None) -> dict[str, Any] | None:
        """The built-in registrar's bindings in this database (total, online, offline, its
        OPTIONS probe counts); None when that registrar never ran against it."""
        now = time.time() if now is None else now
        try:
            row = self.db.execute(
                "SELECT COUNT(*), COALESCE(SUM(online), 0) FROM reg_bindings "
                "WHERE expires_at > ?", (now,)).fetchone()
        except sqlite3.Error:
            return None
        total, online = int(row[0]), int(row[1])
        out: dict[str, Any] = {"bindings": total, "online": online, "offline": total - online}
        try:
            meta = self.db.execute(
                "SELECT value FROM reg_meta WHERE key = 'liveness'").fetchone()
            if meta is not None:
                probes = json.loads(meta[0])
                out["options"] = {k: int(probes.get(k, 0)) for k in ("sent", "answers",
                                                                     "timeouts")}
        except (sqlite3.Error, ValueError, AttributeError):
            pass  # an older registrar: no probe counts
        return out

    def secret(self, name: str, size: int = 32) -> bytes:
        """A random secret kept in the store, created on first use; every process that opens
        the same store gets the same one (the guard's proof key: shared by all workers and
        kept across restarts, so tokens handed out before a restart still prove receipt)."""
        key = f"secret-{name}"
        self.db.execute(
            "INSERT OR IGNORE INTO snapshots(name, saved, data) VALUES (?, ?, ?)",
            (key, time.time(), json.dumps(os.urandom(size).hex())))
        found = self.load_snapshot(key)
        try:
            value = bytes.fromhex(found[1]) if found is not None else b""
        except (TypeError, ValueError):
            value = b""
        if len(value) < 16:  # damaged: replace it (tokens handed out so far stop proving)
            value = os.urandom(size)
            self.save_snapshot(key, value.hex())
        return value
