"""Opening the state database: WAL mode, the schema at its current version
(``store_schema.migrate``), an integrity check, and recovery from a damaged file (moved aside to
``<path>.corrupt-<UTC time>`` and replaced by a fresh one, recorded as ``state_corrupt``).
``store.Store`` opens through here, as does the registrar's binding writer."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from floodguard.events import EventLog
from floodguard.store_schema import StoreError, StoreTooNew, migrate

CORRUPT_SNAPSHOT = "state_corrupt"  # the fresh database's record of what was moved aside
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


class StoreCorrupt(StoreError):
    """The state database is damaged (not a database, malformed, or failing its check)."""


def is_corruption(exc: BaseException) -> bool:
    """True for SQLite's "file is not a database" and "database disk image is malformed";
    never for a busy, locked, read-only or missing file."""
    if isinstance(exc, StoreCorrupt):
        return True
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "file is not a database" in text or "malformed" in text


def connect(path: str | os.PathLike[str], *, check: bool = True,
            events: EventLog | None = None) -> sqlite3.Connection:
    """The state database in WAL mode with floodguard's tables at the current schema version
    (``store_schema.migrate``; an upgrade of existing state emits ``state_upgraded`` on
    ``events``, default stderr); with ``check`` it must also pass ``PRAGMA quick_check``.
    Raises sqlite3 errors, StoreCorrupt, or StoreTooNew (a newer floodguard's file)."""
    db = sqlite3.connect(str(path), timeout=10, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        if check and str(path) != ":memory:":
            problems = [row[0] for row in db.execute("PRAGMA quick_check(5)").fetchall()]
            if problems != ["ok"]:
                raise StoreCorrupt("quick_check: " + "; ".join(map(str, problems)))
        before, after = migrate(db)
        if 0 < before < after:
            (events or EventLog(sys.stderr)).emit(
                "state_upgraded", path=os.path.abspath(path), from_version=before,
                to_version=after)
    except StoreTooNew as exc:
        db.close()
        raise StoreTooNew(f"{path}: {exc}") from None
    except BaseException:
        db.close()
        raise
    return db


@contextlib.contextmanager
def _dir_lock(path: Path) -> Iterator[None]:
    """Serializes recovery among the processes sharing the state directory (guard workers,
    the registrar, CLI commands), so one moves the file aside and the others open the fresh one."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def quarantine(path: str | os.PathLike[str], now: float | None = None) -> Path:
    """Moves the database and its -wal/-shm aside to ``<path>.corrupt-<UTC time>``; returns the
    new path of the database file."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 1
    while any(Path(f"{target}{s}").exists() for s in ("", "-wal", "-shm")):
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}.{n}")
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}{suffix}", f"{target}{suffix}")
    return target


def quarantined(path: str | os.PathLike[str]) -> list[Path]:
    """Damaged databases moved aside from path that are still there, oldest first."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    found = [p for p in path.parent.glob(f"{path.name}.corrupt-*")
             if not p.name.endswith(("-wal", "-shm"))]
    return sorted(found, key=lambda p: p.name)


def open_recovering(path: str | os.PathLike[str], events: EventLog | None = None,
                    ) -> tuple[sqlite3.Connection, dict[str, Any] | None]:
    """Opens the state database; a damaged one is moved aside and replaced by a fresh one.

    Returns the connection and, when this call recovered, the record of it (also emitted as the
    ``state_corrupt`` event and saved in the fresh database). Errors that are not corruption
    (permissions, a full disk, a lock held too long) raise as they are: moving a healthy file
    aside would lose state for nothing.
    """
    path = Path(path)
    try:
        return connect(path, events=events), None
    except (sqlite3.DatabaseError, StoreCorrupt) as exc:
        if not is_corruption(exc):
            raise
    with _dir_lock(path):
        try:  # another process may have recovered meanwhile
            return connect(path, events=events), None
        except (sqlite3.DatabaseError, StoreCorrupt) as exc:
            if not is_corruption(exc):
                raise
            error = " ".join(str(exc).split())
        now = time.time()
        moved = quarantine(path, now)
        db = connect(path)
    record = {"path": os.path.abspath(path), "moved_to": os.path.abspath(moved), "error": error,
              "time": now, "pid": os.getpid()}
    db.execute("INSERT OR REPLACE INTO snapshots(name, saved, data) VALUES (?, ?, ?)",
               (CORRUPT_SNAPSHOT, now, json.dumps(record)))
    # stderr by default: a command's own output (--json) must stay parseable
    (events or EventLog(sys.stderr)).emit("state_corrupt", **record)
    return db, record
