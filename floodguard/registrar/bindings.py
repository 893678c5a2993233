"""The binding table: AOR -> contacts, in memory, persisted write-behind to SQLite (WAL).

The registrar answers from memory; changes are queued and written in one transaction by
`BindingTable.flush` (the server calls it every 100 ms and once more on shutdown, so an
acknowledged binding survives a clean stop). Tables live in the state database shared with
the guard, under their own ``reg_`` names, through this module's own connection. Times stored
are wall-clock seconds so a restart keeps every binding with its remaining expiry.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from floodguard.errors import FloodguardError
from floodguard.store_open import open_recovering

SCHEMA = """
CREATE TABLE IF NOT EXISTS reg_bindings (
    aor TEXT NOT NULL,
    contact TEXT NOT NULL,
    domain TEXT NOT NULL,
    transport TEXT NOT NULL,
    source_ip TEXT NOT NULL,
    source_port INTEGER NOT NULL,
    local TEXT NOT NULL,
    call_id TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    registered_at REAL NOT NULL,
    last_seen REAL NOT NULL,
    online INTEGER NOT NULL,
    user_agent TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (aor, contact)
);
CREATE INDEX IF NOT EXISTS reg_bindings_expires ON reg_bindings(expires_at);
CREATE TABLE IF NOT EXISTS reg_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_COLUMNS = (
    "aor, contact, domain, transport, source_ip, source_port, local, call_id, cseq, "
    "expires_at, registered_at, last_seen, online, user_agent"
)
_UPSERT = f"INSERT OR REPLACE INTO reg_bindings({_COLUMNS}) VALUES ({', '.join('?' * 14)})"
_DELETE = "DELETE FROM reg_bindings WHERE aor = ? AND contact = ?"
FLUSH_BUSY_MS = 50
CLOSE_BUSY_MS = 10000


class BindingStoreError(FloodguardError):
    """The state database cannot be opened or written."""


@dataclass(slots=True)
class Binding:
    """One contact bound to an AOR. ``local`` names the listening socket it arrived on."""

    aor: str
    contact: str
    domain: str
    transport: str
    source_ip: str
    source_port: int
    local: str
    call_id: str
    cseq: int
    expires_at: float
    registered_at: float
    last_seen: float
    online: bool
    user_agent: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.aor, self.contact)

    def remaining(self, now: float) -> int:
        """Whole seconds left, rounded up (0 once expired)."""
        left = self.expires_at - now
        return max(0, int(left) + (left > int(left)))

    def row(self) -> tuple[Any, ...]:
        return (
            self.aor, self.contact, self.domain, self.transport, self.source_ip,
            self.source_port, self.local, self.call_id, self.cseq, self.expires_at,
            self.registered_at, self.last_seen, int(self.online), self.user_agent,
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Binding:
        values = list(row)
        values[12] = bool(values[12])
        return cls(*values)


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open the state database in WAL mode and create the registrar's tables."""
    try:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # a damaged file is moved aside (state_corrupt) and a fresh one starts, as for
            # the guard: the registrar never stays down over it
            recovered, _ = open_recovering(path)
            recovered.close()
        db = sqlite3.connect(str(path), timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
    except (OSError, sqlite3.Error) as exc:
        raise BindingStoreError(f"{path}: cannot open state database: {exc}") from None
    return db


class BindingTable:
    """In-memory bindings with write-behind persistence."""

    def __init__(self, path: str | os.PathLike[str], now: float | None = None, *,
                 keep: Callable[[str], bool] | None = None) -> None:
        """`keep(aor)`: which stored AORs this table holds (all by default; a worker keeps
        the ones it owns)."""
        self.path = str(path)
        self.db = connect(path)
        self._keep = keep
        self._by_aor: dict[str, dict[str, Binding]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._count = 0
        self.load(time.time() if now is None else now)
        # Flushes run on the event loop: never wait long for a lock another process holds
        # (the changes stay queued and the next flush retries).
        self.db.execute(f"PRAGMA busy_timeout = {FLUSH_BUSY_MS}")

    # --- persistence -------------------------------------------------------------------

    def load(self, now: float) -> None:
        """Read every unexpired binding; expired ones are deleted."""
        try:
            self.db.execute("DELETE FROM reg_bindings WHERE expires_at <= ?", (now,))
            rows = self.db.execute(f"SELECT {_COLUMNS} FROM reg_bindings").fetchall()
        except sqlite3.Error as exc:
            raise BindingStoreError(f"{self.path}: cannot read bindings: {exc}") from None
        self._by_aor.clear()
        self._dirty.clear()
        self._count = 0
        keep = self._keep
        for row in rows:
            binding = Binding.from_row(row)
            if keep is not None and not keep(binding.aor):
                continue
            self._by_aor.setdefault(binding.aor, {})[binding.contact] = binding
            self._count += 1

    def flush(self) -> int:
        """Write every queued change in one transaction; returns how many rows changed."""
        if not self._dirty:
            return 0
        dirty, self._dirty = self._dirty, set()
        upserts: list[tuple[Any, ...]] = []
        deletes: list[tuple[str, str]] = []
        for aor, contact in dirty:
            binding = self._by_aor.get(aor, {}).get(contact)
            if binding is None:
                deletes.append((aor, contact))
            else:
                upserts.append(binding.row())
        try:
            self.db.execute("BEGIN IMMEDIATE")
            if deletes:
                self.db.executemany(_DELETE, deletes)
            if upserts:
                self.db.executemany(_UPSERT, upserts)
            self.db.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            self._dirty |= dirty  # keep them for the next attempt
            raise
        return len(dirty)

    @property
    def pending(self) -> int:
        return len(self._dirty)

    def close(self) -> None:
        """Final flush (waiting for locks as long as needed, within reason) and close."""
        try:
            self.db.execute(f"PRAGMA busy_timeout = {CLOSE_BUSY_MS}")
            self.flush()
        finally:
            self.db.close()

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM reg_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO reg_meta(key, value) VALUES (?, ?)", (key, value))

    # --- the table -------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def contacts(self, aor: str) -> dict[str, Binding]:
        """The AOR's bindings by contact URI (possibly including just-expired ones)."""
        return self._by_aor.get(aor) or {}

    def active(self, aor: str, now: float) -> list[Binding]:
        """The AOR's unexpired bindings."""
        found = self._by_aor.get(aor)
        if not found:
            return []
        return [b for b in found.values() if b.expires_at > now]

    def get(self, key: tuple[str, str]) -> Binding | None:
        found = self._by_aor.get(key[0])
        return None if found is None else found.get(key[1])

    def put(self, binding: Binding) -> bool:
        """Add or replace a binding; True when it is new."""
        found = self._by_aor.setdefault(binding.aor, {})
        new = binding.contact not in found
        found[binding.contact] = binding
        if new:
            self._count += 1
        self._dirty.add(binding.key)
        return new

    def touch(self, binding: Binding) -> None:
        """Queue a changed binding for writing."""
        self._dirty.add(binding.key)

    def remove(self, aor: str, contact: str) -> bool:
        found = self._by_aor.get(aor)
        if not found or contact not in found:
            return False
        del found[contact]
        if not found:
            del self._by_aor[aor]
        self._count -= 1
        self._dirty.add((aor, contact))
        return True

    def expire(self, now: float) -> list[Binding]:
        """Drop bindings whose expiry has passed; returns them."""
        gone = [b for found in self._by_aor.values() for b in found.values()
                if b.expires_at <= now]
        for binding in gone:
            self.remove(binding.aor, binding.contact)
        return gone

    def __iter__(self) -> Iterator[Binding]:
        for found in list(self._by_aor.values()):
            yield from list(found.values())


@dataclass(frozen=True)
class EndpointRow:
    """One binding as `floodguard endpoints` shows it."""

    aor: str
    contact: str
    transport: str
    source: str
    expires_in: int
    online: bool
    last_seen: float
    registered_at: float
    user_agent: str

    def as_dict(self, now: float) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = "online" if self.online else "offline"
        out["last_seen_ago"] = round(max(0.0, now - self.last_seen), 1)
        return out


def read_endpoints(path: str | os.PathLike[str], now: float | None = None) -> list[EndpointRow]:
    """Unexpired bindings from the database, sorted by AOR; works while the registrar runs."""
    now = time.time() if now is None else now
    if str(path) != ":memory:" and not Path(path).is_file():
        return []
    try:
        db = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        raise BindingStoreError(f"{path}: cannot open state database: {exc}") from None
    try:
        rows = db.execute(
            f"SELECT {_COLUMNS} FROM reg_bindings WHERE expires_at > ? ORDER BY aor, contact",
            (now,),
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise BindingStoreError(f"{path}: cannot read bindings: {exc}") from None
    finally:
        db.close()
    out = []
    for row in rows:
        b = Binding.from_row(row)
        source = f"{b.transport}:" + (f"[{b.source_ip}]" if ":" in b.source_ip
                                      else b.source_ip) + f":{b.source_port}"
        out.append(EndpointRow(
            aor=f"{b.aor}@{b.domain}", contact=b.contact, transport=b.transport, source=source,
            expires_in=b.remaining(now), online=b.online, last_seen=b.last_seen,
            registered_at=b.registered_at, user_agent=b.user_agent,
        ))
    return out
