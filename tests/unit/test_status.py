"""Status snapshot helpers, the rich screen and the metrics collector on sample data."""

import io
import json
from pathlib import Path

from rich.console import Console

from floodguard import status
from floodguard.config import loads
from floodguard.events import EventLog
from floodguard.metrics import queue_stats
from floodguard.status_view import build
from floodguard.store import Store


def test_rates_and_health(status_sample):
    before, after = status_sample(), status_sample(time=102.0, reg_drops=30, queued=9, ok=7)
    rates = status.rates(before, after)
    assert rates["kernel:register-rate"] == 10.0
    assert rates["kernel:queued"] == 2.0
    assert rates["guard:pass:ok"] == 2.0
    problems = status.health(after)
    assert problems == ["set floodguard-ban is 900/1000 full",
                        "hashlimit table fg-reg-0123abcd (REGISTER per source, IPv4) is 95/100 "
                        "full: when full, the kernel drops every new source's packets"]
    after["kernel"]["hashlimits"][0]["entries"] = 79
    after["kernel"]["conntrack"]["entries"] = 262144
    assert status.health(after)[1:] == [
        "conntrack table is 262144/262144 full: when full, the kernel drops every new flow"]
    after["guard"]["ok"] = False
    assert any("guard not running" in p for p in status.health(after))


def test_screen_renders_every_part(status_sample):
    data = status_sample(time=101.0, reg_drops=20)
    data["health"] = status.health(data)
    out = io.StringIO()
    Console(file=out, width=120).print(build(data, status.rates(status_sample(), data)))
    text = out.getvalue()
    for needle in ("register-rate", "192.0.2.9", "consecutive-failures", "2 online",
                   "engine-q0 up", "900/1000", "conntrack: 12/262144",
                   "fg-reg-0123abcd (IPv4, REGISTER per source): 95/100"):
        assert needle in text


def test_queue_stats_parses_the_proc_file(tmp_path):
    proc = tmp_path / "q"
    proc.write_text("    0 3349530808     3 2  4016     7     9       14  1\n")
    assert queue_stats(proc) == [{"queue": 0, "waiting": 3, "queue_dropped": 7,
                                  "user_dropped": 9}]
    assert queue_stats(tmp_path / "missing") == []


def test_a_damaged_state_database_shows_until_the_moved_file_is_deleted(tmp_path):
    path = tmp_path / "state.db"
    cfg = loads(f'[state]\npath = "{path}"\n')
    path.write_bytes(b"garbage, not a database\n" * 100)
    data = status.collect(cfg, kernel=False)  # status reads, it never moves anything
    assert data["state"]["ok"] is False and "not a database" in data["state"]["error"]
    assert any(p.startswith("state database unreadable") for p in data["health"])
    assert path.read_bytes().startswith(b"garbage")
    json.dumps(data)  # --json must still work

    recovered = Store(path, events=EventLog(io.StringIO())).recovered  # as run/apply open it
    assert recovered is not None
    data = status.collect(cfg, kernel=False)
    state = data["state"]
    assert state["ok"] is True and state["last_recovery"]["moved_to"] == recovered["moved_to"]
    assert [m["path"] for m in state["moved_aside"]] == [recovered["moved_to"]]
    [line] = [p for p in data["health"] if p.startswith("state database was damaged")]
    assert recovered["moved_to"] in line and "not a database" in line
    text = io.StringIO()
    Console(file=text, width=400).print(build(data, status.rates(data, data)))
    assert "state database was damaged" in text.getvalue()

    Path(recovered["moved_to"]).unlink()  # the operator has looked at it
    data = status.collect(cfg, kernel=False)
    assert data["state"]["moved_aside"] == []
    assert not any("state database" in p for p in data["health"])


def test_every_limit_rule_is_named_for_its_layer() -> None:
    from floodguard.config import Config
    from floodguard.kernel.rules import render
    from floodguard.status import _rule_name

    names = [_rule_name({"rule": r.spec}) for r in render(Config()).rules
             if r.family == 4 and r.chain in ("FLOODGUARD-LIMIT", "FLOODGUARD-SIP")
             and "DROP" in r.spec]
    # the limits in raw first, the string matches on what survived; the REGISTER limit matches
    # in any case (--icase) but is no scanner rule
    assert names == ["tcp-syn", "register-rate", "sip-rate", "proof-budget", "queue-budget"] + \
        ["scanner"] * 5 + ["tcp-connlimit"]
