"""CLI conventions (issue #17 item 11): durations, --json everywhere with JSON errors, exit
codes, ``blacklist remove`` of several addresses / a CIDR / --all, the run-time allow list's
store, CLI and fleet wire format, and events with journald priorities (guard and registrar).

The kernel is left out here (``cli_books.ban_book`` without sets);
tests/integration/test_allow_cli.py runs the same commands against real ipsets in a namespace."""

from __future__ import annotations

import io
import json
import logging
import os
import time

import pytest
from click.testing import CliRunner

from floodguard import cli, cli_books, durations
from floodguard.bans import BanBook
from floodguard.cli import main
from floodguard.events import EventHandler, EventLog, priority_of
from floodguard.fleet import wire
from floodguard.store import Store

# ---------------------------------------------------------------- durations


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("90s", 90), ("30m", 1800), ("4h", 14400), ("1d", 86400), ("2w", 1209600),
    ("1h30m", 5400), (" 1D ", 86400), ("1.5", 1.5), ("0.5h", 1800), (".5m", 30),
])
def test_durations_parse(text, seconds):
    assert durations.parse(text) == seconds


@pytest.mark.parametrize("text", ["", "-1", "1x", "h", "1h1h", "1 h", "1e9", "nan", "inf",
                                  "30m1h2", "9" * 40, "1h-5m"])
def test_durations_refuse_with_the_text_named(text):
    with pytest.raises(ValueError, match="not a duration"):
        durations.parse(text)


def _config(tmp_path, extra: str = "", name: str = "f.toml") -> str:
    path = tmp_path / name
    path.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n{extra}')
    return str(path)


@pytest.fixture
def store_only(tmp_path, monkeypatch):
    """The blacklist/allow commands on this store, without the kernel."""
    store = Store(tmp_path / "s.db")
    monkeypatch.setattr(cli_books, "ban_book",
                        lambda cfg, need_kernel: BanBook(_effective(cfg, store), store, None))
    return store


def _effective(cfg, store):
    from floodguard import allows

    return allows.effective(cfg, store)


def test_ttl_takes_durations_and_refuses_bad_ones_as_usage(tmp_path, store_only):
    config = _config(tmp_path)
    ok = CliRunner().invoke(main, ["blacklist", "add", "198.51.100.7", "--ttl", "1h30m",
                                   "-c", config])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout == "banned 198.51.100.7 for 5400 s (manual)\n"
    for bad in ("0", "5x", "-1m"):
        result = CliRunner().invoke(main, ["blacklist", "add", "198.51.100.8", "--ttl", bad,
                                           "-c", config])
        assert result.exit_code == 2 and "--ttl" in result.output, result.output
    assert store_only.get_ban("198.51.100.8") is None


# ---------------------------------------------------------------- --json and JSON errors


def _json(result) -> object:
    return json.loads(result.stdout)


def test_every_printing_command_has_json():
    """Each command that prints takes --json (run and registrar print events only)."""
    ctx = main.make_context("floodguard", ["--help"], resilient_parsing=True)
    missing = []

    def walk(group, prefix):
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if hasattr(command, "list_commands"):
                walk(command, f"{prefix}{name} ")
            elif name not in ("run", "registrar") and "as_json" not in {
                    p.name for p in command.params}:
                missing.append(prefix + name)

    walk(main, "")
    assert missing == []


def test_config_check_json_ok_and_error(tmp_path):
    config = _config(tmp_path)
    ok = CliRunner().invoke(main, ["config", "check", "--json", "-c", config])
    assert ok.exit_code == 0 and _json(ok) == {"ok": True, "source": config}
    bad = _config(tmp_path, '[limits]\nsip_burst = 0\n[suspension]\nregister_retry = "six"\n',
                  "bad.toml")
    result = CliRunner().invoke(main, ["config", "check", "--json", "-c", bad])
    assert result.exit_code == 3
    error = _json(result)["error"]
    assert error["exit_code"] == 3 and len(error["details"]) == 2
    assert any("limits.sip_burst" in d for d in error["details"])
    shown = CliRunner().invoke(main, ["config", "show", "--json", "-c", config])
    assert shown.exit_code == 0 and _json(shown)["config"]["state"]["path"].endswith("s.db")


@pytest.mark.parametrize(("argv", "code", "words"), [
    (["blacklist", "add", "10.0.0.256", "--json"], 2, "not an IP address"),
    (["blacklist", "add", "--json", "198.51.100.9", "--ttl", "soon"], 2, "not a duration"),
    (["blacklist", "add", "127.0.0.1", "--json"], 4, "loopback"),
    (["allow", "add", "0.0.0.0/0", "--json"], 2, "every source"),
    (["blacklist", "remove", "--json"], 2, "--all"),
])
def test_errors_in_json_mode_are_json_with_the_exit_code(tmp_path, store_only, argv, code,
                                                         words):
    result = CliRunner().invoke(main, [*argv, "-c", _config(tmp_path)])
    assert result.exit_code == code, result.output
    error = _json(result)["error"]
    assert error["exit_code"] == code and words in error["message"]


def test_help_lists_the_exit_codes_the_cli_uses():
    text = CliRunner().invoke(main, ["--help"]).output
    table = text[text.index("Exit codes:"):]
    for code in ("0", "1", "2", "3", "4", "5", "130"):
        assert f"\n    {code:<3}  " in table
    assert "--ttl" in table  # a bad duration is a usage error (2)


# ---------------------------------------------------------------- blacklist remove


def test_blacklist_remove_several_a_cidr_and_all(tmp_path, store_only):
    config = _config(tmp_path)
    book = BanBook(cli.configmod.load(config), store_only, None)
    for ip in ("192.0.2.1", "192.0.2.2", "198.51.100.1", "203.0.113.5"):
        book.add(ip, 600, "t")
    book.add("2001:db8:1:2::99", 600, "t")  # kept as the /64 key 2001:db8:1:2::
    store_only.put_hold("lockdown", "192.0.2.77", "spraying", 600, count=4)

    def run(*args):
        result = CliRunner().invoke(main, ["blacklist", "remove", *args, "--json", "-c",
                                           config])
        assert result.exit_code == 0, result.output
        return _json(result)

    assert run("192.0.2.1", "203.0.113.9") == {"removed": ["192.0.2.1"],
                                               "not_banned": ["203.0.113.9"]}
    assert run("192.0.2.0/24") == {"removed": ["192.0.2.2", "192.0.2.77"], "not_banned": []}
    # a /128 inside the banned /64 lifts that ban
    assert run("2001:db8:1:2::5/128") == {"removed": ["2001:db8:1:2::"], "not_banned": []}
    text = CliRunner().invoke(main, ["blacklist", "remove", "--all", "-c", config]).stdout
    assert text.splitlines() == ["removed 198.51.100.1", "removed 203.0.113.5"]
    assert store_only.active_bans() == []
    assert CliRunner().invoke(main, ["blacklist", "remove", "--all", "-c", config]).stdout \
        == "no active bans\n"
    both = CliRunner().invoke(main, ["blacklist", "remove", "--all", "192.0.2.1", "-c",
                                     config])
    assert both.exit_code == 2


# ---------------------------------------------------------------- allow (store side)


def test_allow_add_list_remove_and_lift(tmp_path, store_only):
    config = _config(tmp_path, '[blacklist]\nallow = ["10.9.0.0/16"]\n')
    cfg = cli.configmod.load(config)
    BanBook(cfg, store_only, None).add("198.51.100.20", 600, "t")
    added = CliRunner().invoke(main, ["allow", "add", "198.51.100.0/27", "2001:db8::1",
                                      "--ttl", "1h", "--json", "-c", config])
    assert added.exit_code == 0, added.output
    first, second = _json(added)
    assert first["network"] == "198.51.100.0/27" and first["lifted"] == ["198.51.100.20"]
    assert 3590 < first["remaining"] <= 3600 and second["network"] == "2001:db8::1/128"
    assert store_only.active_bans() == []
    commands = [(c.op, c.ip) for c in store_only.take_commands(0)]
    assert commands[-3:] == [("allow", "198.51.100.0/27"), ("unban", "198.51.100.20"),
                             ("allow", "2001:db8::1/128")]
    # an allowed source can no longer be banned by hand
    refused = CliRunner().invoke(main, ["blacklist", "add", "198.51.100.3", "-c", config])
    assert refused.exit_code == 4 and "allow list" in refused.output
    listed = _json(CliRunner().invoke(main, ["allow", "list", "--json", "-c", config]))
    assert [(r["network"], r["source"]) for r in listed] == [
        ("198.51.100.0/27", "runtime"), ("2001:db8::1/128", "runtime"),
        ("10.9.0.0/16", "config")]
    journal = [(e.op, e.ip) for e in store_only.journal_after(0) if e.op.endswith("allow")]
    assert journal == [("allow", "198.51.100.0/27"), ("allow", "2001:db8::1/128")]
    removed = CliRunner().invoke(main, ["allow", "remove", "198.51.100.0/27", "10.9.0.0/16",
                                        "--json", "-c", config])
    assert _json(removed) == {"removed": ["198.51.100.0/27"], "not_allowed": ["10.9.0.0/16"]}
    assert [r.net for r in store_only.active_allows()] == ["2001:db8::1/128"]
    assert store_only.journal_after(0)[-1].op == "disallow"
    explained = _json(CliRunner().invoke(main, ["explain", "2001:db8::1", "--json", "-c",
                                                config]))
    assert explained["allow"] == "2001:db8::1/128"  # explain sees the run-time list too
    # an entry past its time is no longer in force
    store_only.put_allow("192.0.2.0/24", "t", 1, now=time.time() - 10)
    assert "192.0.2.0/24" not in [r.net for r in store_only.active_allows()]


# ---------------------------------------------------------------- fleet wire


def test_fleet_wire_allow_changes_and_merge():
    now = time.time()
    allow = wire.check_change({"op": "allow", "ip": "::ffff:10.0.0.0/104", "ts": now,
                               "until": 0, "node": "a", "reason": "r"}, now)
    assert allow["ip"] == "10.0.0.0/8" and wire.horizon(allow) == float("inf")
    for bad in ({"op": "allow", "ip": "0.0.0.0/0", "ts": now, "until": 0},
                {"op": "allow", "ip": "10.0.0.0/8", "ts": now, "until": 1e300},
                {"op": "allow", "ip": "10.0.0.300", "ts": now, "until": 0}):
        with pytest.raises(wire.BadEntry):
            wire.check_change(bad, now)
    timed = {**allow, "until": now + 60}
    gone = {"op": "disallow", "ip": "10.0.0.0/8", "ts": now + 1, "until": now + 3600}
    assert wire.supersedes(allow, timed) and not wire.supersedes(timed, allow)
    assert wire.supersedes(gone, allow) and not wire.supersedes({**allow, "ts": now}, gone)
    assert wire.live(allow, now + 1e9) and not wire.live(timed, now + 61)
    assert wire.Keys("fg").allow == "fg:allow"


# ---------------------------------------------------------------- events and priorities


def test_event_priorities():
    assert priority_of("ban") == 5 and priority_of("set_error") == 4
    assert priority_of("worker_died") == 3 and priority_of("would_ban") == 6
    out = io.StringIO()
    record = EventLog(out, json_mode=True).emit("state_corrupt", path="/x")
    assert json.loads(out.getvalue()) == record and record["priority"] == 3


def test_events_carry_the_journald_prefix_only_on_the_journal(tmp_path, monkeypatch):
    path = tmp_path / "journal"
    with open(path, "w") as stream:
        found = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{found.st_dev}:{found.st_ino}")
        EventLog(stream, json_mode=True).emit("ban", ip="192.0.2.1")
        with open(tmp_path / "other", "w") as other:
            EventLog(other, json_mode=True).emit("ban", ip="192.0.2.1")
    line = path.read_text()
    assert line.startswith("<5>{") and json.loads(line[3:])["ip"] == "192.0.2.1"
    assert (tmp_path / "other").read_text().startswith("{")


def test_registrar_log_records_become_events():
    out = io.StringIO()
    log = logging.getLogger("floodguard.registrar.test-events")
    log.handlers[:] = [EventHandler(EventLog(out, json_mode=True))]
    log.propagate = False
    log.setLevel(logging.INFO)
    log.info("%s: %s bound", "1001@x", "sip:1001@192.0.2.1",
             extra={"event": "register", "fields": {"aor": "1001@x"}})
    try:
        raise OSError("disk full")
    except OSError:
        log.exception("cannot write")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["event"] == "register" and first["priority"] == 6
    assert first["message"] == "1001@x: sip:1001@192.0.2.1 bound" and first["aor"] == "1001@x"
    assert second["event"] == "log" and second["priority"] == 3
    assert "disk full" in second["error"]
