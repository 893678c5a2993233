"""The state store's run-time allow list (``floodguard allow``): networks that are never
limited nor banned, on top of the config's static ``blacklist.allow``. A mixin of
``store.Store``, which owns the connection; the table (``allows``) is schema step 6 in
``store_schema``. Changes are journalled (ops ``allow`` and ``disallow``, the network in
the journal's ``ip`` column) so the fleet link shares them like bans.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any


@dataclass(frozen=True)
class AllowRow:
    """A run-time allow-list entry: ``net`` in canonical CIDR form (``addr.canonical_network``),
    ``until`` None for one that stays until removed."""

    net: str
    reason: str
    created: float
    until: float | None

    def remaining(self, now: float) -> float | None:
        return None if self.until is None else max(0.0, self.until - now)

    def as_dict(self, now: float) -> dict[str, Any]:
        left = self.remaining(now)
        return {"network": self.net, "reason": self.reason, "created": self.created,
                "until": self.until, "remaining": None if left is None else round(left, 1)}


class AllowTables:
    """Store methods for the ``allows`` table (needs ``self.db`` and ``self._journal``)."""

    db: sqlite3.Connection

    if TYPE_CHECKING:
        def _journal(self, op: str, ip: str, kind: str | None, reason: str | None,
                     aor: str | None, failures: int | None, until: float | None,
                     now: float) -> None: ...

    def put_allow(self, net: str, reason: str, seconds: float | None, *,
                  now: float | None = None, created: float | None = None,
                  until: float | None = None, journal: bool = True) -> AllowRow:
        """Allow ``net`` (canonical CIDR) for ``seconds`` (None: until removed), or until
        ``until`` when given (the fleet's own time); ``journal=False`` for fleet changes."""
        now = time.time() if now is None else now
        if until is None and seconds is not None:
            until = now + seconds
        row = AllowRow(net, reason, now if created is None else created, until)
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("INSERT OR REPLACE INTO allows(net, reason, created, until) "
                            "VALUES (?, ?, ?, ?)", (row.net, row.reason, row.created, row.until))
            if journal:
                self._journal("allow", net, None, reason, None, None, row.until, row.created)
        return row

    def delete_allow(self, net: str, *, journal: bool = True,
                     now: float | None = None) -> bool:
        """Remove ``net`` from the run-time allow list; True when it was there (even expired)."""
        now = time.time() if now is None else now
        with self.db:
            self.db.execute("BEGIN")
            found = self.db.execute("DELETE FROM allows WHERE net = ?", (net,)).rowcount > 0
            if journal:
                self._journal("disallow", net, None, "manual", None, None, None, now)
        return found

    def active_allows(self, now: float | None = None) -> list[AllowRow]:
        """Entries in force at ``now``, by network text."""
        now = time.time() if now is None else now
        cur = self.db.execute("SELECT net, reason, created, until FROM allows "
                              "WHERE until IS NULL OR until > ? ORDER BY net", (now,))
        return [AllowRow(*row) for row in cur.fetchall()]

    def allow_spans(self, nets: list[str]) -> dict[str, tuple[float, float | None]]:
        """net -> (created, until) of the rows (expired ones included) for ``nets``."""
        out: dict[str, tuple[float, float | None]] = {}
        for i in range(0, len(nets), 500):
            chunk = nets[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for net, created, until in self.db.execute(
                    f"SELECT net, created, until FROM allows WHERE net IN ({marks})",  # noqa: S608
                    chunk):
                out[net] = (created, until)
        return out

    def prune_allows(self, now: float) -> None:
        self.db.execute("DELETE FROM allows WHERE until IS NOT NULL AND until <= ?", (now,))
