"""SQLite state store: bans, known-good sources, snapshots and operator commands."""

import io
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from floodguard.events import EventLog
from floodguard.store import (
    CORRUPT_SNAPSHOT,
    Store,
    StoreCorrupt,
    StoreError,
    is_corruption,
    quarantined,
)


def test_bans_survive_reopen_with_remaining_time(tmp_path):
    path = tmp_path / "state.db"
    store = Store(path)
    store.put_ban("192.0.2.7", "suspend", "register_retry", 180, aor="1001@x", failures=6, now=1000)
    store.put_ban("2001:db8::1", "blacklist", "spray", 3600, now=1000)
    store.close()
    again = Store(path)
    bans = {b.ip: b for b in again.active_bans(now=1100)}
    assert set(bans) == {"192.0.2.7", "2001:db8::1"}
    assert bans["192.0.2.7"].remaining(1100) == 80
    assert bans["192.0.2.7"].aor == "1001@x" and bans["192.0.2.7"].failures == 6
    assert again.active_bans(now=1181)[0].ip == "2001:db8::1"
    assert again.get_ban("192.0.2.7", now=1181) is None
    assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_delete_and_prune(tmp_path):
    store = Store(tmp_path / "s.db")
    store.put_ban("192.0.2.1", "manual", "operator", 10, now=0)
    store.put_ban("192.0.2.2", "manual", "operator", 100, now=0)
    assert store.delete_ban("192.0.2.2") is True
    assert store.delete_ban("192.0.2.2") is False
    store.prune(now=50)
    assert store.db.execute("SELECT COUNT(*) FROM bans").fetchone()[0] == 0


def test_known_and_snapshots_and_commands(tmp_path):
    store = Store(tmp_path / "s.db")
    store.put_known("192.0.2.9", 7200, now=0)
    assert store.active_known(now=200) == [("192.0.2.9", 7000)]
    store.save_snapshot("engine", {"a": [1, 2]}, now=5)
    assert store.load_snapshot("engine") == (5, {"a": [1, 2]})
    assert store.load_snapshot("other") is None
    first = store.last_command_id()
    store.queue_command("ban", "192.0.2.5", 60, "test")
    store.queue_command("unban", "192.0.2.5")
    cmds = store.take_commands(first)
    assert [(c.op, c.ip, c.seconds) for c in cmds] == [
        ("ban", "192.0.2.5", 60), ("unban", "192.0.2.5", None)]
    assert store.take_commands(cmds[-1].id) == []


def test_event_log_json_and_text():
    buf = io.StringIO()
    EventLog(buf).emit("ban", ip="192.0.2.1", seconds=180)
    record = json.loads(buf.getvalue())
    assert record["event"] == "ban" and record["ip"] == "192.0.2.1" and record["seconds"] == 180
    text = io.StringIO()
    EventLog(text, json_mode=False).emit("unban", ip="192.0.2.1", aor=None)
    assert "unban ip=192.0.2.1" in text.getvalue() and "aor" not in text.getvalue()


def test_journal_records_local_changes_in_order_but_not_remote_ones(tmp_path):
    store = Store(tmp_path / "s.db")
    start = store.last_journal_id()
    store.put_ban("192.0.2.1", "suspend", "consecutive-failures", 180, aor="a@x", failures=6,
                  now=100)
    store.put_ban("192.0.2.2", "blacklist", "spraying", 3600, journal=False, now=100)
    store.put_known("192.0.2.3", 7200, now=100)
    store.delete_ban("192.0.2.1")
    entries = store.journal_after(start)
    assert [(e.op, e.ip) for e in entries] == [
        ("ban", "192.0.2.1"), ("known", "192.0.2.3"), ("unban", "192.0.2.1")]
    assert entries[0].until == 280 and entries[0].failures == 6
    assert store.journal_after(entries[-1].id) == []
    assert store.get_ban("192.0.2.2", now=101) is not None


# ---------------------------------------------------------------- a damaged state file


def _real_db(path, bans=2000):
    """A real state database big enough that cutting it in half loses pages."""
    store = Store(path)
    for i in range(bans):
        store.put_ban(f"10.0.{i // 256}.{i % 256}", "blacklist", "spraying" * 8, 3600,
                      aor="x" * 40)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    return path.stat().st_size


def _events(buf):
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_garbage_file_is_moved_aside_and_a_fresh_store_opens(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite\n" * 500)
    (tmp_path / "state.db-wal").write_bytes(b"stale wal")
    (tmp_path / "state.db-shm").write_bytes(b"stale shm")
    buf = io.StringIO()
    store = Store(path, events=EventLog(buf, json_mode=True))
    assert store.recovered is not None and "not a database" in store.recovered["error"]
    moved = Path(store.recovered["moved_to"])
    assert moved.parent == tmp_path and moved.name.startswith("state.db.corrupt-2")
    assert moved.read_bytes().startswith(b"this is not sqlite")
    # the old -wal/-shm never meet the fresh database (moved along, or dropped by SQLite itself)
    for suffix in ("-wal", "-shm"):
        old = Path(f"{moved}{suffix}")
        assert not old.exists() or old.read_bytes().startswith(b"stale")
    assert quarantined(path) == [moved]
    # the fresh store works and remembers what happened
    store.put_ban("192.0.2.1", "manual", "operator", 60)
    assert [b.ip for b in store.active_bans()] == ["192.0.2.1"]
    saved = store.load_snapshot(CORRUPT_SNAPSHOT)
    assert saved is not None and saved[1]["moved_to"] == str(moved)
    store.close()
    [event] = _events(buf)
    assert event["event"] == "state_corrupt" and event["moved_to"] == str(moved)
    assert event["path"] == str(path)
    # the next open finds a healthy database: nothing more is moved
    again = Store(path, events=EventLog(buf, json_mode=True))
    assert again.recovered is None and len(_events(buf)) == 1
    assert again.get_ban("192.0.2.1") is not None


def test_truncated_real_database_is_detected_and_replaced(tmp_path):
    path = tmp_path / "state.db"
    size = _real_db(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(StoreCorrupt, match="malformed|quick_check"):
        Store(path, recover=False)
    assert path.stat().st_size == size // 2  # a reader never moves anything
    buf = io.StringIO()
    store = Store(path, events=EventLog(buf, json_mode=True))
    assert store.recovered is not None
    assert store.active_bans() == []
    assert Path(store.recovered["moved_to"]).stat().st_size == size // 2
    assert _events(buf)[0]["event"] == "state_corrupt"


def test_damaged_page_fails_quick_check(tmp_path):
    path = tmp_path / "state.db"
    size = _real_db(path)
    with open(path, "r+b") as f:  # scribble over a b-tree page in the middle of the file
        f.seek(size // 2 - (size // 2) % 4096)
        f.write(b"\xff" * 4096)
    store = Store(path, events=EventLog(io.StringIO()))
    assert store.recovered is not None
    assert len(quarantined(path)) == 1


def test_errors_that_are_not_corruption_never_move_the_file(tmp_path):
    path = tmp_path / "state.db"
    _real_db(path, bans=10)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # in WAL mode: writers and the schema script must wait
    try:
        store = Store(path)
        assert store.recovered is None
        store.close()
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert not is_corruption(sqlite3.OperationalError("database is locked"))
    assert is_corruption(sqlite3.DatabaseError("file is not a database"))
    (tmp_path / "a-directory").mkdir()
    with pytest.raises(StoreError) as info:  # cannot be opened at all: an error, not corruption
        Store(tmp_path / "a-directory")
    assert not isinstance(info.value, StoreCorrupt)
    assert (tmp_path / "a-directory").is_dir()
    assert quarantined(path) == []


def test_concurrent_opens_recover_once(tmp_path):
    path = tmp_path / "state.db"
    path.write_bytes(b"\x00garbage" * 4096)
    code = ("import sys; from floodguard.store import Store; s = Store(sys.argv[1]); "
            "s.put_ban('192.0.2.9', 'manual', 'x', 60); print(s.recovered is not None)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert sorted(out.strip() for out, _ in results) == ["False", "False", "False", "True"]
    assert len(quarantined(path)) == 1
    assert Store(path).get_ban("192.0.2.9") is not None
