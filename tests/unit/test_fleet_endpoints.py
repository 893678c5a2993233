"""The fleet's endpoint changes (fleet/endpoints.py): what a journal entry becomes, the checks
on whatever comes back from Redis, the merge rules, and what a guard worker does with the
commands they queue (guard_commands.py)."""

from __future__ import annotations

import pytest

from floodguard.config import Config
from floodguard.fleet import endpoints, wire
from floodguard.fleet.wire import BadEntry, check_change, supersedes
from floodguard.guard_commands import run_command
from floodguard.policy.engine import Engine
from floodguard.store import Command, JournalEntry

NOW = 1_800_000_000.0
NAT = "198.51.100.40"


def entry(op, ip="", kind=None, reason=None, aor=None, failures=None, until=None):
    return JournalEntry(1, op, ip, kind, reason, aor, failures, until, NOW)


def test_journal_entries_become_checked_changes_with_their_redis_field():
    cases = [
        (entry("pair", NAT, aor="1001@x", until=NOW + 7200), f"pair|{NAT}|1001@x"),
        (entry("suspend", NAT, kind="2", reason="consecutive-failures", aor="1010@x",
               failures=6, until=NOW + 180), f"suspend|{NAT}|1010@x"),
        (entry("resume", NAT, aor="1010@x"), f"suspend|{NAT}|1010@x"),
        (entry("hold", "", kind="account:1", reason="distributed-guessing", aor="1005@x",
               failures=5, until=NOW + 3600), "hold|account|1005@x"),
        (entry("hold", NAT, kind="lockdown:3", reason="spraying", failures=5, until=NOW + 3600),
         f"hold|lockdown|{NAT}"),
        (entry("release", "", kind="account", aor="1005@x"), "hold|account|1005@x"),
    ]
    for journal, field in cases:
        change = wire.change_from_journal(journal, "a")
        assert change["key"] == field
        assert check_change(change, NOW) == change, change
    assert wire.change_from_journal(cases[4][0], "a")["level"] == 3  # the hold's level
    suspend = wire.change_from_journal(cases[1][0], "a")
    assert (suspend["level"], suspend["failures"], suspend["reason"]) == (
        2, 6, "consecutive-failures")
    # a tombstone stays until the lifted state would have ended at the latest
    assert wire.change_from_journal(cases[2][0], "a")["until"] == NOW + endpoints.TOMBSTONE_KEEP


@pytest.mark.parametrize("bad", [
    {"op": "pair", "ip": NAT, "aor": "a|b@x", "ts": NOW, "until": NOW + 60},
    {"op": "pair", "ip": NAT, "aor": "", "ts": NOW, "until": NOW + 60},
    {"op": "pair", "ip": NAT, "aor": "x" * 300, "ts": NOW, "until": NOW + 60},
    {"op": "pair", "ip": NAT, "aor": "10\x0001@x", "ts": NOW, "until": NOW + 60},
    {"op": "pair", "ip": "127.0.0.1", "aor": "1001@x", "ts": NOW, "until": NOW + 60},
    {"op": "pair", "ip": "10.0.0.0/8", "aor": "1001@x", "ts": NOW, "until": NOW + 60},
    {"op": "pair", "ip": NAT, "aor": "1001@x", "ts": NOW, "until": float("nan")},
    {"op": "suspend", "ip": NAT, "aor": "1@x", "ts": NOW, "until": NOW + 9, "level": 0},
    {"op": "suspend", "ip": NAT, "aor": "1@x", "ts": NOW, "until": NOW + 9, "failures": -1},
    {"op": "hold", "hold": "everything", "subject": NAT, "ts": NOW, "until": NOW + 9},
    {"op": "hold", "hold": "lockdown", "subject": "1001@x", "ts": NOW, "until": NOW + 9},
    {"op": "hold", "hold": ["account"], "subject": "1001@x", "ts": NOW, "until": NOW + 9},
    {"op": "release", "hold": "account", "subject": None, "ts": NOW, "until": NOW + 9},
    {"op": "resume", "ip": NAT, "aor": "1@x", "ts": NOW + 10_000, "until": NOW + 9},
])
def test_bad_endpoint_entries_are_refused_with_a_reason(bad):
    with pytest.raises(BadEntry):
        check_change(bad, NOW)


def test_an_ipv6_source_prefix_is_a_source_and_aors_are_case_folded():
    change = check_change({"op": "pair", "ip": "2001:db8:1::/64", "aor": "Alice@X",
                           "ts": NOW, "until": NOW + 60}, NOW)
    assert (change["ip"], change["aor"]) == ("2001:db8:1::/64", "alice@x")


def test_merge_rules_are_the_bans():
    made = {"op": "suspend", "ts": NOW, "until": NOW + 180}
    longer = {"op": "suspend", "ts": NOW + 5, "until": NOW + 360}
    lift = {"op": "resume", "ts": NOW + 10, "until": NOW + 3600}
    assert supersedes(longer, made) and not supersedes(made, longer)
    assert supersedes(lift, longer) and not supersedes(made, lift)
    assert supersedes({"op": "suspend", "ts": NOW + 11, "until": NOW + 200}, lift)


def test_the_guard_engine_takes_the_fleets_commands():
    engine = Engine(Config())
    now = 100.0

    def run(op, ip, seconds=None, reason=None):
        return run_command(engine, Command(1, op, ip, seconds, reason), now)

    run("pair", NAT, 7200, "1001@x")
    assert engine.pairs.is_known(now, NAT, "1001@x") and engine.is_shared(now, NAT)
    run("suspend-pair", NAT, 180, "1010@x")
    assert engine.pairs.suspended(now, NAT, "1010@x") is not None
    run("lift-pair", NAT, None, "1010@x")
    assert engine.pairs.suspended(now, NAT, "1010@x") is None
    run("lockdown", "203.0.113.9", 3600, "2")
    assert engine.lockdowns.until(now, "203.0.113.9") == now + 3600
    run("unlock", "203.0.113.9")
    assert engine.lockdowns.until(now, "203.0.113.9") is None
    run("protect", "1005@x", 3600, "1")
    assert engine.accounts.until(now, "1005@x") == now + 3600
    run("unprotect", "1005@x")
    assert engine.accounts.until(now, "1005@x") is None
    assert run("allow", "192.0.2.0/24") is True
