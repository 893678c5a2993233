"""The one enforcement path: every caller's ban has the same side effects (kernel in memory).

The same check runs for the guard's decision, the operator's ``blacklist add``, a feed import
and a fleet change; tests/integration/test_enforce_paths.py repeats it on the real kernel.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from floodguard.bans import BanBook
from floodguard.config import loads
from floodguard.enforce import EVENT_EACH, Enforcer
from floodguard.events import EventLog
from floodguard.feeds import import_feed
from floodguard.fleet import Applier
from floodguard.guard import Guard
from floodguard.policy.engine import Ban, Unban
from floodguard.store import BanRow, Store
from tests.kernelfake import KernelSets

SOURCE = "198.51.100.77"


class Swept(list[str]):
    """Records what a path asked to cut (the conntrack sweep)."""

    def __call__(self, keys: Any) -> None:
        self.extend(keys)


def _ban(path: str, tmp_path: Path) -> tuple[Store, KernelSets, Swept, list[dict[str, Any]]]:
    feed = tmp_path / "feed.txt"
    feed.write_text(f"{SOURCE}\n", encoding="utf-8")
    cfg = loads(f'[[feed]]\nname = "f"\nsource = "{feed}"\nban_time = 600\n')
    store, sets, swept, log = Store(tmp_path / "s.db"), KernelSets(cfg), Swept(), io.StringIO()
    events = EventLog(log, json_mode=True)
    if path == "guard":
        guard = Guard(cfg, sets=sets, store=store, events=events, flush_conntrack=swept)
        guard.apply([Ban(SOURCE, 600, "consecutive-failures", "suspend", "100@x", 6)])
    elif path == "operator":
        BanBook(cfg, store, sets, events=events, forget=swept).add(SOURCE, 600, "manual")
    elif path == "feed":
        import_feed(cfg, cfg.feeds[0], store, sets, events=events, forget=swept)
    else:
        change = {"op": "ban", "ip": SOURCE, "ts": 1e9, "until": 9e9, "node": "b",
                  "kind": "suspend", "reason": "consecutive-failures", "aor": None,
                  "failures": 6}
        Applier(cfg, store, sets, writer_factory=KernelSets.writer, events=events,
                forget=swept).apply([change], now=1e9)
    return store, sets, swept, [json.loads(line) for line in log.getvalue().splitlines()]


@pytest.mark.parametrize("path", ["guard", "operator", "feed", "fleet"])
def test_every_path_has_the_same_side_effects(tmp_path: Path, path: str) -> None:
    store, sets, swept, events = _ban(path, tmp_path)
    assert sets.test("ban", SOURCE)
    assert store.get_ban(SOURCE, now=1e9 + 1) is not None
    journal = [e.op for e in store.journal_after(0) if e.ip == SOURCE]
    assert journal == ([] if path == "fleet" else ["ban"])  # the fleet's own are not echoed
    commands = [c.op for c in store.take_commands(0) if c.ip == SOURCE]
    assert commands == ([] if path == "guard" else ["ban"])  # the guard decided it itself
    assert swept == [SOURCE]
    banned = [e for e in events if e["event"] in ("ban", "suspend")]
    assert [(e["ip"], e["by"]) for e in banned] == [(SOURCE, path)]


@pytest.mark.parametrize("path", ["guard", "operator"])
def test_unban_lifts_kernel_and_store_and_says_so(tmp_path: Path, path: str) -> None:
    store, sets, _, _ = _ban(path, tmp_path)
    log = io.StringIO()
    enforce = Enforcer(store, sets, EventLog(log, json_mode=True), by=path, forget=None)
    assert enforce.unban(SOURCE, reason="manual")
    assert not sets.test("ban", SOURCE) and store.get_ban(SOURCE) is None
    assert [e.op for e in store.journal_after(0) if e.ip == SOURCE] == ["ban", "unban"]
    assert json.loads(log.getvalue())["event"] == "unban"


def test_an_allow_listed_unban_stays_on_this_node(tmp_path: Path) -> None:
    store, sets, _, _ = _ban("guard", tmp_path)
    guard = Guard(loads(""), sets=sets, store=store, events=EventLog(io.StringIO(), True))
    guard.apply([Unban(SOURCE, "allow-listed")])
    assert store.get_ban(SOURCE) is None
    assert [e.op for e in store.journal_after(0) if e.ip == SOURCE] == ["ban"]


def test_a_refused_kernel_entry_keeps_the_store_row_and_is_reported(tmp_path: Path) -> None:
    log = io.StringIO()
    store, sets = Store(tmp_path / "s.db"), KernelSets(maxelem=0)
    enforce = Enforcer(store, sets, EventLog(log, json_mode=True), by="operator", forget=None)
    enforce.ban(SOURCE, 60, kind="manual", reason="test")
    assert store.get_ban(SOURCE) is not None and not sets.test("ban", SOURCE)
    assert enforce.set_errors == 1 and enforce.last_error is not None
    assert [json.loads(line)["event"] for line in log.getvalue().splitlines()] == \
        ["set_error", "ban"]


def test_a_large_batch_is_one_event_one_sweep_and_one_command_batch(tmp_path: Path) -> None:
    log, swept = io.StringIO(), Swept()
    store, sets = Store(tmp_path / "s.db"), KernelSets(maxelem=EVENT_EACH * 2)
    enforce = Enforcer(store, sets, EventLog(log, json_mode=True), by="feed", forget=swept)
    rows = [BanRow(f"203.0.113.{i}", "manual", "feed:f", None, 0, 1e9, 1e9 + 60)
            for i in range(EVENT_EACH * 3)]
    result = enforce.ban_many(rows, now=1e9)
    assert len(result.done) == len(rows) and len(result.full) == EVENT_EACH
    assert swept == result.done
    assert len(store.take_commands(0)) == len(rows)
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["set_error", "bans"]
    assert events[0]["count"] == EVENT_EACH and events[1]["count"] == len(rows)
