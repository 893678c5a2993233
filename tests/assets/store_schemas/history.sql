-- The state database's tables as floodguard/store.py's SCHEMA created them before schema
-- versions existed, each table once, verbatim from git (`git log -p -- floodguard/store.py`).
-- `-- table NAME: from COMMIT [to COMMIT]` opens a table's block (its index included);
-- tests/unit/test_store_schema.py composes an older commit's schema from them.

-- table bans: from c730433
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

-- table known: from c730433
CREATE TABLE IF NOT EXISTS known (
    ip TEXT PRIMARY KEY,
    until REAL NOT NULL
);

-- table snapshots: from c730433
CREATE TABLE IF NOT EXISTS snapshots (
    name TEXT PRIMARY KEY,
    saved REAL NOT NULL,
    data TEXT NOT NULL
);

-- table commands: from c730433
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL,
    ip TEXT NOT NULL,
    seconds REAL,
    reason TEXT,
    created REAL NOT NULL
);

-- table journal: from 7e519f8
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

-- table failures: from 989eedb to 7d12b24
CREATE TABLE IF NOT EXISTS failures (
    engine TEXT NOT NULL,
    ip TEXT NOT NULL,
    aor TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS failures_engine ON failures(engine, created);

-- table reports: from ba518ba
CREATE TABLE IF NOT EXISTS reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ip TEXT NOT NULL,
    aor TEXT NOT NULL,
    ok INTEGER NOT NULL,
    expires INTEGER,
    created REAL NOT NULL
);

-- table known_pairs: from 9a570ba
CREATE TABLE IF NOT EXISTS known_pairs (
    ip TEXT NOT NULL,
    aor TEXT NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (ip, aor)
);
CREATE INDEX IF NOT EXISTS known_pairs_until ON known_pairs(until);

-- table pair_bans: from 9a570ba
CREATE TABLE IF NOT EXISTS pair_bans (
    ip TEXT NOT NULL,
    aor TEXT NOT NULL,
    reason TEXT NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    level INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (ip, aor)
);

-- table protected_accounts: from d582c63 to 99070b6
CREATE TABLE IF NOT EXISTS protected_accounts (
    aor TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    sources INTEGER NOT NULL DEFAULT 0,
    level INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    until REAL NOT NULL
);

-- table holds: from 99070b6
CREATE TABLE IF NOT EXISTS holds (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    reason TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    level INTEGER NOT NULL DEFAULT 1,
    created REAL NOT NULL,
    until REAL NOT NULL,
    PRIMARY KEY (kind, key)
);
