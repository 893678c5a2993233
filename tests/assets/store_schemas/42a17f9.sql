-- floodguard/store.py SCHEMA at commit 42a17f9 2026-12-02, verbatim (unversioned: user_version 0)
CREATE TABLE IF NOT EXISTS bans (
    ip TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    aor TEXT,
    failures INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    until REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS bans_until ON bans(until);
CREATE TABLE IF NOT EXISTS known (
    ip TEXT PRIMARY KEY,
    until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    name TEXT PRIMARY KEY,
    saved REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL,
    ip TEXT NOT NULL,
    kind TEXT,
    reason TEXT,
    aor TEXT,
    failures INTEGER,
    until REAL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL,
    ip TEXT NOT NULL,
    seconds REAL,
    reason TEXT,
    created REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ip TEXT NOT NULL,
    aor TEXT NOT NULL,
    ok INTEGER NOT NULL,
    expires INTEGER,
    created REAL NOT NULL
);
