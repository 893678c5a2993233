"""Binding table persistence: write-behind, locks held by other processes, shared database."""

import sqlite3
import time

import pytest

from floodguard.registrar.bindings import Binding, BindingTable, read_endpoints
from floodguard.store import Store

NOW = 1_800_000_000.0


def binding(i: int, expires: float = NOW + 600) -> Binding:
    return Binding(f"u{i}", f"sip:u{i}@192.0.2.5:{5000 + i}", "example.com", "udp", "192.0.2.5",
                   5000 + i, "udp:0.0.0.0:5060", f"c{i}", 1, expires, NOW, NOW, True)


def test_changes_are_written_in_one_flush(tmp_path):
    table = BindingTable(tmp_path / "s.db", now=NOW)
    for i in range(100):
        table.put(binding(i))
    table.remove("u5", "sip:u5@192.0.2.5:5005")
    assert read_endpoints(tmp_path / "s.db", NOW) == []  # nothing written yet
    assert table.flush() == 100
    assert len(read_endpoints(tmp_path / "s.db", NOW)) == 99
    assert table.pending == 0
    table.close()


def test_a_foreign_write_lock_does_not_block_and_changes_are_kept(tmp_path):
    path = tmp_path / "s.db"
    table = BindingTable(path, now=NOW)
    table.put(binding(1))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError):
        table.flush()
    assert time.monotonic() - started < 1.0
    assert table.pending == 1
    other.execute("COMMIT")
    other.close()
    assert table.flush() == 1
    table.close()


def test_expired_bindings_are_dropped(tmp_path):
    table = BindingTable(tmp_path / "s.db", now=NOW)
    table.put(binding(1, expires=NOW + 10))
    table.put(binding(2, expires=NOW + 100))
    assert [b.aor for b in table.expire(NOW + 50)] == ["u1"]
    assert len(table) == 1
    table.close()
    assert [r.aor for r in read_endpoints(tmp_path / "s.db", NOW)] == ["u2@example.com"]


def test_shares_the_guard_state_database(tmp_path):
    path = tmp_path / "state.db"
    store = Store(path)
    store.put_ban("192.0.2.66", "suspend", "test", 60)
    table = BindingTable(path, now=NOW)
    table.put(binding(1))
    table.close()
    assert store.get_ban("192.0.2.66") is not None
    tables = {r[0] for r in store.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"bans", "reg_bindings", "reg_meta"} <= tables
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_a_damaged_state_file_is_moved_aside_and_the_registrar_starts(tmp_path) -> None:
    from floodguard.registrar.bindings import BindingTable

    path = tmp_path / "state.db"
    path.write_bytes(b"this is no database" * 100)
    table = BindingTable(str(path), now=1_800_000_000.0)
    assert len(table) == 0
    moved = [p.name for p in tmp_path.iterdir() if p.name.startswith("state.db.corrupt-")]
    assert len(moved) == 1
