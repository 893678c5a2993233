"""SQLite state store: bans, known-good sources, snapshots and operator commands."""

import io
import json

from floodguard.events import EventLog
from floodguard.store import Store


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
