"""The state store's tables for endpoints (issue #16): known-good (source, AOR) pairs,
endpoint suspensions, and holds — account protections and source lockdowns. A mixin of
``store.Store``, which owns the connection; the tables are created by ``store_schema``'s
migrations (steps 4 and 5).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from floodguard.store_rows import TimedRow

HOLD_ACCOUNT = "account"  # an account protection (issue #16 item 4)
HOLD_LOCKDOWN = "lockdown"  # a shared source address in lockdown (item 3)


@dataclass(frozen=True)
class HoldRow(TimedRow):
    """A persisted hold that only a key's known-good pairs pass: an account protection (kind
    HOLD_ACCOUNT, key: the AOR, count: the distinct failing sources) or a source lockdown (kind
    HOLD_LOCKDOWN, key: the address, count: the distinct AORs it failed on)."""

    kind: str
    key: str
    reason: str
    count: int
    level: int
    created: float
    until: float


@dataclass(frozen=True)
class PairBanRow(TimedRow):
    """A persisted endpoint suspension: REGISTERs for ``aor`` from ``ip`` are dropped."""

    ip: str
    aor: str
    reason: str
    failures: int
    level: int
    created: float
    until: float

    def as_dict(self, now: float) -> dict[str, Any]:
        row = super().as_dict(now)
        return {"ip": row.pop("ip"), "aor": row.pop("aor"), "kind": "suspend", "scope": "aor",
                **row}


class EndpointTables:
    """Store methods for the endpoint tables (``self.db``: the store's connection)."""

    db: sqlite3.Connection

    # known-good pairs and endpoint suspensions ------------------------------------
    # (an older database gains the tables on open: store_schema.migrate)

    def put_known_pairs(self, items: list[tuple[str, str, float]], *,
                        journal: bool = True) -> None:
        """Record (address, AOR, until) known-good pairs in one transaction; ``journal=False``
        for pairs that came from elsewhere (the fleet)."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT OR REPLACE INTO known_pairs(ip, aor, until) VALUES (?, ?, ?)", items)
            if journal:
                self.db.executemany(
                    "INSERT INTO journal(op, ip, aor, until, created) VALUES ('pair', ?, ?, ?, ?)",
                    [(ip, aor, until, now) for ip, aor, until in items])

    def active_known_pairs(self, now: float | None = None) -> list[tuple[str, str, float]]:
        """(address, AOR, remaining seconds) of the live known-good pairs."""
        now = time.time() if now is None else now
        cur = self.db.execute("SELECT ip, aor, until FROM known_pairs WHERE until > ?", (now,))
        return [(ip, aor, until - now) for ip, aor, until in cur.fetchall()]

    def put_pair_ban(self, ip: str, aor: str, reason: str, seconds: float, *, failures: int = 0,
                     level: int = 1, now: float | None = None,
                     journal: bool = True) -> PairBanRow:
        """Record an endpoint suspension (replacing any of the same pair)."""
        now = time.time() if now is None else now
        row = PairBanRow(ip, aor, reason, failures, level, now, now + seconds)
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT OR REPLACE INTO pair_bans(ip, aor, reason, failures, level, created, "
                "until) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row.ip, row.aor, row.reason, row.failures, row.level, row.created, row.until))
            if journal:
                self.db.execute(
                    "INSERT INTO journal(op, ip, kind, reason, aor, failures, until, created) "
                    "VALUES ('suspend', ?, ?, ?, ?, ?, ?, ?)",
                    (ip, str(level), reason, aor, failures, row.until, now))
        return row

    def end_pair_ban(self, ip: str, aor: str | None = None, *,
                     now: float | None = None, journal: bool = False) -> int:
        """End the live suspension of (ip, aor), or every one of ip, now; returns how many
        were live. Ended rows stay for ``explain``'s history until ``prune`` (JOURNAL_KEEP).
        ``journal``: an operator's lift, which the fleet shares (an expiry is not)."""
        now = time.time() if now is None else now
        with self.db:
            self.db.execute("BEGIN")
            if aor is None:
                ended = [aor for (aor,) in self.db.execute(
                    "SELECT aor FROM pair_bans WHERE ip = ? AND until > ?", (ip, now))]
                cur = self.db.execute(
                    "UPDATE pair_bans SET until = ? WHERE ip = ? AND until > ?", (now, ip, now))
            else:
                ended = [aor]
                cur = self.db.execute(
                    "UPDATE pair_bans SET until = ? WHERE ip = ? AND aor = ? AND until > ?",
                    (now, ip, aor, now))
            if journal and cur.rowcount:
                self.db.executemany(
                    "INSERT INTO journal(op, ip, aor, created) VALUES ('resume', ?, ?, ?)",
                    [(ip, one, now) for one in ended])
        return int(cur.rowcount)

    def ended_pair_bans(self, now: float | None = None) -> list[PairBanRow]:
        """Endpoint suspensions that are over (the last one of each endpoint, kept
        JOURNAL_KEEP), latest first."""
        now = time.time() if now is None else now
        cur = self.db.execute(
            "SELECT ip, aor, reason, failures, level, created, until FROM pair_bans "
            "WHERE until <= ? ORDER BY until DESC", (now,))
        return [PairBanRow(*r) for r in cur.fetchall()]

    def active_pair_bans(self, now: float | None = None) -> list[PairBanRow]:
        """Live endpoint suspensions, soonest to end first."""
        now = time.time() if now is None else now
        cur = self.db.execute(
            "SELECT ip, aor, reason, failures, level, created, until FROM pair_bans "
            "WHERE until > ? ORDER BY until", (now,))
        return [PairBanRow(*r) for r in cur.fetchall()]

    # holds: account protections and source lockdowns -----------------------------

    def put_hold(self, kind: str, key: str, reason: str, seconds: float, *, count: int = 0,
                 level: int = 1, now: float | None = None, journal: bool = True) -> HoldRow:
        """Record a hold (replacing any of the same kind and key)."""
        now = time.time() if now is None else now
        row = HoldRow(kind, key, reason, count, level, now, now + seconds)
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT OR REPLACE INTO holds(kind, key, reason, count, level, created, until) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row.kind, row.key, row.reason, row.count, row.level, row.created, row.until))
            if journal:
                self._journal_hold("hold", f"{row.kind}:{level}", row.key, reason, count,
                                   row.until, now)
        return row

    def delete_hold(self, kind: str, key: str, *, journal: bool = False) -> bool:
        """End a hold; True when the store held one. ``journal``: an operator's lift, which
        the fleet shares (an expiry is not)."""
        with self.db:
            self.db.execute("BEGIN")
            cur = self.db.execute("DELETE FROM holds WHERE kind = ? AND key = ?", (kind, key))
            if journal and cur.rowcount:
                self._journal_hold("release", kind, key, None, None, None, time.time())
        return cur.rowcount > 0

    def _journal_hold(self, op: str, kind: str, key: str, reason: str | None,
                      count: int | None, until: float | None, now: float) -> None:
        """A hold's journal entry: its key in the column its kind names (an address: ip, an
        account: aor); ``kind`` may carry the level ("account:2")."""
        ip, aor = (key, None) if kind.startswith(HOLD_LOCKDOWN) else ("", key)
        self.db.execute(
            "INSERT INTO journal(op, ip, kind, reason, aor, failures, until, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (op, ip, kind, reason, aor, count, until, now))

    def endpoint_span(self, what: str, first: str, second: str) -> tuple[float, float] | None:
        """(created, until) of the stored pair (``what`` "pair": its created is 0),
        endpoint suspension ("suspend": ip, aor) or hold ("hold": kind, key); None if none."""
        query = {"pair": "SELECT 0, until FROM known_pairs WHERE ip = ? AND aor = ?",
                 "suspend": "SELECT created, until FROM pair_bans WHERE ip = ? AND aor = ?",
                 "hold": "SELECT created, until FROM holds WHERE kind = ? AND key = ?"}[what]
        found = self.db.execute(query, (first, second)).fetchone()
        return None if found is None else (float(found[0]), float(found[1]))

    def active_holds(self, kind: str, now: float | None = None) -> list[HoldRow]:
        """Live holds of one kind, soonest to end first."""
        now = time.time() if now is None else now
        cur = self.db.execute(
            "SELECT kind, key, reason, count, level, created, until FROM holds "
            "WHERE kind = ? AND until > ? ORDER BY until", (kind, now))
        return [HoldRow(*r) for r in cur.fetchall()]
