"""A damaged state database must never keep floodguard down (issue #13, item 10).

Garbage in state.db, on the real stack in namespaces: ``floodguard apply`` still installs the
rules and ``floodguard run`` still starts; each moves the damaged file aside
(``state.db.corrupt-<UTC time>``) and says so with a ``state_corrupt`` event; the guard then
judges real traffic (svcrack gets banned, in the kernel set and in the fresh database), and
``floodguard status`` shows the moved files until an operator deletes them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from floodguard.store import Store, quarantined
from tests.integration.conftest import CLIENTS4
from tests.integration.guardkit import GuardLab, svcrack

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save",
                              "kamailio", "svcrack")

ATTACKER = CLIENTS4[0]
GARBAGE = b"\x89not a database\x00" * 512


def events_in(text: str, name: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == name:
            out.append(record)
    return out


def test_garbage_state_db_is_moved_aside_and_the_guard_judges_packets(glab: GuardLab) -> None:
    state = glab.tmp / "state.db"
    config = str(glab.write_config("[scanner]\nuser_agents = []\n"))

    # apply: the rules go in, the damaged file goes aside
    state.write_bytes(GARBAGE)
    applied = glab.server.floodguard("apply", "-c", config, "--backend", "nft")
    [event] = events_in(applied.stdout + applied.stderr, "state_corrupt")
    first = Path(event["moved_to"])
    assert first.read_bytes() == GARBAGE and event["path"] == str(state)
    assert "not a database" in event["error"]

    # run: garbage again (as after a crash mid-write) — the guard starts all the same
    state.write_bytes(GARBAGE)
    glab.start_kamailio()
    glab.start_guard()
    assert glab.guard is not None and glab.guard.poll() is None
    [event] = [e for e in glab.events() if e["event"] == "state_corrupt"]
    second = Path(event["moved_to"])
    assert second != first and second.read_bytes() == GARBAGE
    assert sorted(quarantined(state)) == sorted([first, second])

    # it judges packets: proven failures get the guesser banned, kernel and fresh store alike
    svcrack(glab, ATTACKER)
    assert ATTACKER in glab.ban_set()
    store = Store(state, recover=False)
    try:
        assert store.get_ban(ATTACKER) is not None
    finally:
        store.close()

    # status: healthy store, the guard running, and the moved files as a problem to look at
    deadline = time.monotonic() + 10
    while True:
        shown = glab.server.floodguard("status", "--json", "-c", config, check=False)
        data = json.loads(shown.stdout)
        if data["guard"]["ok"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert shown.returncode == 1, shown.stdout  # something to look at: exit 1
    assert data["guard"]["ok"] and sum(data["guard"]["verdicts"].values()) > 0
    assert data["state"]["ok"] is True
    assert data["state"]["last_recovery"]["moved_to"] == str(second)
    assert {m["path"] for m in data["state"]["moved_aside"]} == {str(first), str(second)}
    damaged = [p for p in data["health"] if p.startswith("state database was damaged")]
    assert len(damaged) == 2 and any(str(second) in p for p in damaged)
    assert glab.guard.poll() is None
