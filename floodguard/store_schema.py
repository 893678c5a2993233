"""The state database's schema and its upgrade path, counted by ``PRAGMA user_version``.

``MIGRATIONS`` is the ordered list of steps from an empty file to today's tables. Opening the
store (``migrate``) reads ``user_version`` and applies the steps the file lacks, all in one
``BEGIN IMMEDIATE`` transaction that also sets the new version, so a crash or a failing step
leaves the file as it was and the processes opening it at once (guard workers, the registrar,
CLI commands) upgrade it exactly once. A store already current is only read (no write, no lock).
A store whose version is newer than the code knows is refused (``StoreTooNew``), never
downgraded: an older floodguard could not keep what the newer one wrote.

Stores written before versions existed (user_version 0) are recognised by their tables: the
highest version whose tables are all present is where the steps start (``detect_version``); a
file with none of them is new and gets every step. That is why every step creates with
``IF NOT EXISTS``: the registrar may have created ``reports`` in a file the guard never opened.

**Changing the schema = appending one step** (never edit a step that has shipped: hosts ran it).
A new table is ``Migration(<last version + 1>, "what it holds", ("CREATE TABLE IF NOT EXISTS
..."),)`` at the end of ``MIGRATIONS``, plus its name in the step's ``tables`` so unversioned
detection keeps working; a change that needs code (copying rows) gives ``convert`` as well. The
unit tests check that versions run 1, 2, 3 … and that a fresh file equals an upgraded one.

The registrar's ``reg_`` tables live in the same file but are its own (``registrar.bindings``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

from floodguard.errors import FloodguardError


class StoreError(FloodguardError):
    """The state database cannot be opened or written."""


class StoreTooNew(StoreError):
    """The state database was written by a newer floodguard (its schema version is unknown)."""


@dataclass(frozen=True)
class Migration:
    """One schema step: the statements (run in order) and the tables it brings in."""

    version: int
    summary: str
    statements: tuple[str, ...]
    tables: tuple[str, ...] = ()
    convert: Callable[[sqlite3.Connection], None] | None = None

    def apply(self, db: sqlite3.Connection) -> None:
        for statement in self.statements:
            db.execute(statement)
        if self.convert is not None:
            self.convert(db)


def _table_exists(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                      (name,)).fetchone() is not None


def _holds_from_protected_accounts(db: sqlite3.Connection) -> None:
    """Stores of d582c63 kept account protections in ``protected_accounts``; they become holds
    of kind "account" (store_endpoints.HOLD_ACCOUNT) with the failing sources as count."""
    if not _table_exists(db, "protected_accounts"):
        return
    db.execute("INSERT OR IGNORE INTO holds(kind, key, reason, count, level, created, until) "
               "SELECT 'account', aor, reason, sources, level, created, until "
               "FROM protected_accounts")
    db.execute("DROP TABLE protected_accounts")


REPORTS_TABLE = """CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ip TEXT NOT NULL,
    aor TEXT NOT NULL,
    ok INTEGER NOT NULL,
    expires INTEGER,
    created REAL NOT NULL
)"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "bans, known-good sources, policy snapshots, operator commands (c730433)", (
        """CREATE TABLE IF NOT EXISTS bans (
            ip TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            reason TEXT NOT NULL,
            aor TEXT,
            failures INTEGER NOT NULL DEFAULT 0,
            created REAL NOT NULL,
            until REAL NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS bans_until ON bans(until)",
        """CREATE TABLE IF NOT EXISTS known (
            ip TEXT PRIMARY KEY,
            until REAL NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS snapshots (
            name TEXT PRIMARY KEY,
            saved REAL NOT NULL,
            data TEXT NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS commands (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            op TEXT NOT NULL,
            ip TEXT NOT NULL,
            seconds REAL,
            reason TEXT,
            created REAL NOT NULL
        )""",
    ), ("bans", "known", "snapshots", "commands")),
    Migration(2, "journal of local ban/unban/known changes for the fleet link (7e519f8)", (
        """CREATE TABLE IF NOT EXISTS journal (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            op TEXT NOT NULL,
            ip TEXT NOT NULL,
            kind TEXT,
            reason TEXT,
            aor TEXT,
            failures INTEGER,
            until REAL,
            created REAL NOT NULL
        )""",
    ), ("journal",)),
    # 989eedb..7d12b24 kept proven failures in a `failures` table; they moved to a file beside
    # the database (floodguard/failures.py) and nothing reads the table since: it goes.
    Migration(3, "registrar reports over TLS (ba518ba); the failures table dropped (7d12b24)", (
        REPORTS_TABLE,
        "DROP TABLE IF EXISTS failures",
    ), ("reports",)),
    Migration(4, "known-good (source, AOR) pairs and endpoint suspensions (9a570ba)", (
        """CREATE TABLE IF NOT EXISTS known_pairs (
            ip TEXT NOT NULL,
            aor TEXT NOT NULL,
            until REAL NOT NULL,
            PRIMARY KEY (ip, aor)
        )""",
        "CREATE INDEX IF NOT EXISTS known_pairs_until ON known_pairs(until)",
        """CREATE TABLE IF NOT EXISTS pair_bans (
            ip TEXT NOT NULL,
            aor TEXT NOT NULL,
            reason TEXT NOT NULL,
            failures INTEGER NOT NULL DEFAULT 0,
            level INTEGER NOT NULL DEFAULT 1,
            created REAL NOT NULL,
            until REAL NOT NULL,
            PRIMARY KEY (ip, aor)
        )""",
    ), ("known_pairs", "pair_bans")),
    Migration(5, "holds: account protections and source lockdowns (99070b6)", (
        """CREATE TABLE IF NOT EXISTS holds (
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            reason TEXT NOT NULL,
            count INTEGER NOT NULL DEFAULT 0,
            level INTEGER NOT NULL DEFAULT 1,
            created REAL NOT NULL,
            until REAL NOT NULL,
            PRIMARY KEY (kind, key)
        )""",
    ), ("holds",), _holds_from_protected_accounts),
    Migration(6, "allows: the run-time allow list (floodguard allow; store_allows.py)", (
        """CREATE TABLE IF NOT EXISTS allows (
            net TEXT PRIMARY KEY,
            reason TEXT NOT NULL,
            created REAL NOT NULL,
            until REAL
        )""",
    ), ("allows",)),
)

CURRENT = MIGRATIONS[-1].version


def user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def detect_version(db: sqlite3.Connection) -> int:
    """The version an unversioned store is at: the last step whose tables, and those of every
    step before it, are all there (0 for a file without floodguard's tables)."""
    found = 0
    for step in MIGRATIONS:
        if not all(_table_exists(db, name) for name in step.tables):
            break
        found = step.version
    return found


def _refuse(found: int) -> StoreTooNew:
    return StoreTooNew(
        f"state database schema version {found} is newer than this floodguard knows "
        f"({CURRENT}): it was written by a newer floodguard; upgrade floodguard again (the "
        "file is left untouched, never downgraded)")


def migrate(db: sqlite3.Connection) -> tuple[int, int]:
    """Brings the store on ``db`` (autocommit mode) to CURRENT; returns the versions (from, to),
    equal when nothing ran (from: the detected one for an unversioned store). Raises
    StoreTooNew for a newer store, sqlite3 errors as they are."""
    found = user_version(db)
    if found == CURRENT:
        return found, found
    if found > CURRENT:
        raise _refuse(found)
    db.execute("BEGIN IMMEDIATE")
    try:
        found = user_version(db)  # another process may have upgraded it meanwhile
        if found > CURRENT:
            raise _refuse(found)
        start = found or detect_version(db)
        for step in MIGRATIONS[start:]:
            step.apply(db)
        db.execute(f"PRAGMA user_version = {CURRENT}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite already rolled back after some errors (a full disk)
            db.execute("ROLLBACK")
        raise
    return start, CURRENT
