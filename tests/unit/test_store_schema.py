"""State database schema versions (issue #17 item 4): real SQLite files written with the DDL of
older floodguard commits (tests/assets/store_schemas/history.sql, verbatim from git) and rows in
every table they had, opened by today's Store and CLI."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from floodguard import store_schema
from floodguard.store import HOLD_ACCOUNT, Store, StoreError, StoreTooNew, quarantined
from floodguard.store_schema import CURRENT, MIGRATIONS, Migration, migrate

HISTORY = Path(__file__).resolve().parents[1] / "assets" / "store_schemas" / "history.sql"
NOW = time.time()
UNTIL = NOW + 3600

# commit -> the version its unversioned store is detected at, and its tables in SCHEMA's order
OLD = {
    "c730433": (1, ("bans", "known", "snapshots", "commands")),
    "989eedb": (2, ("bans", "known", "snapshots", "journal", "failures", "commands")),
    "42a17f9": (3, ("bans", "known", "snapshots", "journal", "commands", "reports")),
    "d582c63": (4, ("bans", "known", "snapshots", "journal", "known_pairs", "pair_bans",
                    "protected_accounts", "commands", "reports")),
    "cd992b1": (5, ("bans", "known", "snapshots", "journal", "known_pairs", "pair_bans", "holds",
                    "commands", "reports")),
}

ROWS = {  # table -> rows written into an old store that has it
    "bans": ("INSERT INTO bans VALUES (?, ?, ?, ?, ?, ?, ?)", [
        ("192.0.2.7", "suspend", "register_retry", "1001@example.com", 6, NOW - 60, UNTIL),
        ("2001:db8::/64", "blacklist", "spray", None, 0, NOW - 60, UNTIL),
        ("192.0.2.8", "manual", "operator", None, 0, NOW - 7200, NOW - 3600)]),
    "known": ("INSERT INTO known VALUES (?, ?)", [("198.51.100.4", UNTIL)]),
    "snapshots": ("INSERT INTO snapshots VALUES (?, ?, ?)", [
        ("engine", NOW - 5, json.dumps({"failures": {"192.0.2.7": 3}}))]),
    "commands": ("INSERT INTO commands(op, ip, seconds, reason, created) VALUES (?, ?, ?, ?, ?)",
                 [("ban", "192.0.2.50", 600.0, "operator", NOW - 1)]),
    "journal": ("INSERT INTO journal(op, ip, kind, reason, aor, failures, until, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [("ban", "192.0.2.7", "suspend", "register_retry", "1001@example.com", 6, UNTIL,
                  NOW - 60)]),
    "failures": ("INSERT INTO failures VALUES (?, ?, ?, ?)",
                 [("worker-0", "192.0.2.7", "1001@example.com", NOW - 61)]),
    "reports": ("INSERT INTO reports(ip, aor, ok, expires, created) VALUES (?, ?, ?, ?, ?)",
                [("203.0.113.9", "1002@example.com", 0, None, NOW - 2)]),
    "known_pairs": ("INSERT INTO known_pairs VALUES (?, ?, ?)",
                    [("198.51.100.4", "1003@example.com", UNTIL)]),
    "pair_bans": ("INSERT INTO pair_bans VALUES (?, ?, ?, ?, ?, ?, ?)",
                  [("198.51.100.4", "1004@example.com", "register_retry", 6, 1, NOW - 9, UNTIL)]),
    "protected_accounts": ("INSERT INTO protected_accounts VALUES (?, ?, ?, ?, ?, ?)",
                           [("1005@example.com", "distributed", 5, 2, NOW - 30, UNTIL)]),
    "holds": ("INSERT INTO holds VALUES (?, ?, ?, ?, ?, ?, ?)",
              [(HOLD_ACCOUNT, "1005@example.com", "distributed", 5, 2, NOW - 30, UNTIL)]),
}


def old_schema(commit: str) -> str:
    blocks = dict(re.findall(r"^-- table (\w+):[^\n]*\n(.*?)(?=^\n-- table |\Z)",
                             HISTORY.read_text(), flags=re.M | re.S))
    return "".join(blocks[name] for name in OLD[commit][1])


def write_old_store(path: Path, commit: str) -> set[str]:
    """A store as floodguard at ``commit`` left it (WAL, no user_version), with rows; returns
    its tables."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(old_schema(commit))
    tables = {name for (name,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")}
    for table in tables:
        sql, rows = ROWS[table]
        db.executemany(sql, rows)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 0
    db.close()
    assert tables == set(OLD[commit][1])
    return tables


def layout(path: Path | str) -> dict[str, object]:
    """Tables with their columns and indexes, as SQLite describes them (whitespace-blind)."""
    db = sqlite3.connect(path)
    try:
        names = sorted(n for (n,) in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"))
        return {name: (db.execute(f"PRAGMA table_info({name})").fetchall(),
                       sorted(tuple(i[1:3]) + tuple(c[2] for c in db.execute(
                           f"PRAGMA index_info({i[1]})")) for i in db.execute(
                           f"PRAGMA index_list({name})")))
                for name in names}
    finally:
        db.close()


def version_of(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_versions_count_up_from_one() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert MIGRATIONS[-1].version == CURRENT


def test_a_fresh_store_has_todays_tables_at_the_current_version(tmp_path: Path) -> None:
    Store(tmp_path / "fresh.db").close()
    today = tmp_path / "today.db"
    write_old_store(today, "cd992b1")  # main's schema when versions came in...
    Store(today).close()  # ...upgraded by every later step
    assert version_of(tmp_path / "fresh.db") == CURRENT == version_of(today)
    assert layout(tmp_path / "fresh.db") == layout(today)


@pytest.mark.parametrize("commit", list(OLD))
def test_an_older_store_is_upgraded_with_its_rows(tmp_path: Path, commit: str) -> None:
    path = tmp_path / "state.db"
    tables = write_old_store(path, commit)
    events = tmp_path / "events.log"
    with events.open("w") as stream:
        from floodguard.events import EventLog

        store = Store(path, events=EventLog(stream))
    try:
        assert version_of(path) == CURRENT and quarantined(path) == []
        assert layout(path) == layout(_fresh(tmp_path))  # same tables as a fresh store
        # what the guard and the CLI read at start
        bans = {b.ip: b for b in store.active_bans()}
        assert set(bans) == {"192.0.2.7", "2001:db8::/64"}  # the expired one stays expired
        assert bans["192.0.2.7"].aor == "1001@example.com" and bans["192.0.2.7"].failures == 6
        assert round(bans["192.0.2.7"].until) == round(UNTIL)
        assert [ip for ip, _ in store.active_known()] == ["198.51.100.4"]
        assert store.load_snapshot("engine")[1] == {"failures": {"192.0.2.7": 3}}
        assert [(c.op, c.ip) for c in store.take_commands(0)] == [("ban", "192.0.2.50")]
        journal = [(e.op, e.ip) for e in store.journal_after(0)]
        assert journal == ([("ban", "192.0.2.7")] if "journal" in tables else [])
        reports = [r.ip for r in store.reports_after(0)]
        assert reports == (["203.0.113.9"] if "reports" in tables else [])
        pairs = [(ip, aor) for ip, aor, _ in store.active_known_pairs()]
        assert pairs == ([("198.51.100.4", "1003@example.com")] if "known_pairs" in tables
                         else [])
        assert [(p.ip, p.aor) for p in store.active_pair_bans()] == (
            [("198.51.100.4", "1004@example.com")] if "pair_bans" in tables else [])
        held = tables & {"protected_accounts", "holds"}
        assert [(h.key, h.count, h.level) for h in store.active_holds(HOLD_ACCOUNT)] == (
            [("1005@example.com", 5, 2)] if held else [])
        # and it takes new state in every table
        store.put_ban("192.0.2.99", "manual", "operator", 60)
        store.put_hold(HOLD_ACCOUNT, "1006@example.com", "distributed", 60, count=5)
        store.put_known_pairs([("198.51.100.5", "1007@example.com", time.time() + 60)])
        assert store.get_ban("192.0.2.99") is not None
    finally:
        store.close()
    upgraded = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(e["event"], e["from_version"], e["to_version"]) for e in upgraded] == (
        [("state_upgraded", OLD[commit][0], CURRENT)] if OLD[commit][0] < CURRENT else [])


def _fresh(tmp_path: Path) -> Path:
    path = tmp_path / "reference.db"
    if not path.exists():
        Store(path).close()
    return path


def test_the_cli_lists_the_bans_of_an_older_store(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    write_old_store(path, "42a17f9")
    config = tmp_path / "floodguard.toml"
    config.write_text(f'[state]\npath = "{path}"\n')
    shown = subprocess.run([sys.executable, "-m", "floodguard.cli", "blacklist", "list",
                            "--json", "-c", str(config)], capture_output=True, text=True,
                           timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert {row["ip"] for row in json.loads(shown.stdout)} == {"192.0.2.7", "2001:db8::/64"}
    assert '"event":"state_upgraded"' in shown.stderr
    assert version_of(path) == CURRENT


def test_a_newer_store_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {CURRENT + 1}")
    db.execute("CREATE TABLE from_the_future (x)")
    db.commit()
    db.close()
    before = path.read_bytes()
    for recover in (True, False):
        with pytest.raises(StoreTooNew, match=rf"schema version {CURRENT + 1} is newer than "
                                              rf"this floodguard knows \({CURRENT}\)") as caught:
            Store(path, recover=recover)
        assert str(path) in str(caught.value) and isinstance(caught.value, StoreError)
    assert path.read_bytes() == before and quarantined(path) == []
    assert version_of(path) == CURRENT + 1
    config = tmp_path / "floodguard.toml"
    config.write_text(f'[state]\npath = "{path}"\n')
    shown = subprocess.run([sys.executable, "-m", "floodguard.cli", "blacklist", "list",
                            "-c", str(config)], capture_output=True, text=True, timeout=60,
                           check=False)
    assert shown.returncode == 1 and "newer than this floodguard knows" in shown.stderr, shown


def test_reopening_a_current_store_runs_no_migration(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Store(path).close()
    # another process holds the write lock: an open that tried to write would wait for it
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        store = Store(path)
        assert time.monotonic() - started < 5
        assert migrate(store.db) == (CURRENT, CURRENT)
        store.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_failing_step_leaves_the_older_store_as_it_was(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.db"
    write_old_store(path, "42a17f9")
    before = layout(path)
    broken = Migration(CURRENT + 1, "a step that fails halfway", (
        "CREATE TABLE IF NOT EXISTS halfway (x)", "INSERT INTO no_such_table VALUES (1)"))
    monkeypatch.setattr(store_schema, "MIGRATIONS", (*MIGRATIONS, broken))
    monkeypatch.setattr(store_schema, "CURRENT", CURRENT + 1)
    with pytest.raises(StoreError, match="no such table"):
        Store(path)
    assert layout(path) == before and version_of(path) == 0 and quarantined(path) == []


def test_processes_opening_an_older_store_at_once_upgrade_it_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    write_old_store(path, "c730433")
    code = ("import sys; from floodguard.store import Store; s = Store(sys.argv[1]); "
            "s.put_ban('192.0.2.9', 'manual', 'x', 60); print(len(s.active_bans()))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=dict(os.environ))
             for _ in range(4)]
    results = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    assert [out.strip() for out, _ in results] == ["3"] * 4
    assert sum(err.count('"event":"state_upgraded"') for _, err in results) == 1
    assert version_of(path) == CURRENT
