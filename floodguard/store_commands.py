"""The state store's queues between processes: operator commands (``floodguard blacklist``,
``allow``: queued by the CLI, taken by a running guard) and registrar reports (authentication
outcomes over TLS, which the guard cannot read). A mixin of ``store.Store``, which owns the
connection; the tables are in ``store_schema``.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from floodguard.store_schema import REPORTS_TABLE


@dataclass(frozen=True)
class Report:
    """One authenticated REGISTER's outcome, told by floodguard's own registrar for traffic the
    guard cannot read (TLS): a failure (wrong password) or a success."""

    id: int
    ip: str
    aor: str
    ok: bool
    expires: int | None


def put_report(db: sqlite3.Connection, ip: str, aor: str, ok: bool, expires: int | None,
               now: float | None = None) -> None:
    """Write one report into the state database through any connection to it (the
    registrar's own); the table is created if this database has none yet."""
    db.execute(REPORTS_TABLE)
    db.execute("INSERT INTO reports(ip, aor, ok, expires, created) VALUES (?, ?, ?, ?, ?)",
               (ip, aor[:256], int(ok), expires, time.time() if now is None else now))


@dataclass(frozen=True)
class Command:
    """An operator command (ban/unban) queued for a running guard."""

    id: int
    op: str
    ip: str
    seconds: float | None
    reason: str | None


class CommandTables:
    """Store methods for the ``commands`` and ``reports`` tables (needs ``self.db``)."""

    db: sqlite3.Connection

    # operator commands ----------------------------------------------------------

    def queue_command(self, op: str, ip: str, seconds: float | None = None,
                      reason: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO commands(op, ip, seconds, reason, created) VALUES (?, ?, ?, ?, ?)",
            (op, ip, seconds, reason, time.time()))

    def queue_commands(self, commands: list[tuple[str, str, float | None, str | None]]) -> None:
        """Queue many (op, ip, seconds, reason) commands in one transaction."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO commands(op, ip, seconds, reason, created) VALUES (?, ?, ?, ?, ?)",
                [(*command, now) for command in commands])

    def take_commands(self, after: int, limit: int = 1_000_000) -> list[Command]:
        cur = self.db.execute(
            "SELECT id, op, ip, seconds, reason FROM commands WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit))
        return [Command(*r) for r in cur.fetchall()]

    def reports_after(self, after: int, limit: int = 10_000) -> list[Report]:
        """Authentication outcomes a registrar reported (see put_report), oldest first."""
        cur = self.db.execute(
            "SELECT id, ip, aor, ok, expires FROM reports WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit))
        return [Report(rid, ip, aor, bool(ok), expires) for rid, ip, aor, ok, expires in cur]

    def last_report_id(self) -> int:
        found = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM reports").fetchone()
        return int(found[0])

    def last_command_id(self) -> int:
        found = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM commands").fetchone()
        return int(found[0])

    def trim_commands(self, older_than: float) -> None:
        self.db.execute("DELETE FROM commands WHERE created < ?", (older_than,))
