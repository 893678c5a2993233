"""A running guard honours the run-time allow list (``floodguard allow``, issue #17 item 11), on
the real kernel with NFQUEUE, Kamailio and svcrack: an allow lifts the source's ban at once, the
guard judges its guesses as allow-listed and bans nothing, and after ``allow remove`` the same
guessing is banned again."""

from __future__ import annotations

import json
import time

import pytest

from floodguard.store import Store

from .conftest import CLIENTS4
from .guardkit import GuardLab, start, svcrack

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "kamailio", "svcrack",
                              "conntrack")

ATTACKER = CLIENTS4[0]


def fg(lab: GuardLab, *args: str) -> str:
    assert lab.config_path is not None
    return lab.server.floodguard(*args, "-c", str(lab.config_path)).stdout


def allowed_verdicts(lab: GuardLab) -> int:
    store = Store(lab.tmp / "state.db")
    try:
        snap = store.load_snapshot("counters-engine-q0")
    finally:
        store.close()
    return 0 if snap is None else int(snap[1]["verdicts"].get("pass:allow", 0))


def test_the_running_guard_honours_allow_add_and_remove(glab: GuardLab) -> None:
    start(glab)
    svcrack(glab, ATTACKER)
    assert ATTACKER in glab.ban_set()
    added = json.loads(fg(glab, "allow", "add", ATTACKER, "--reason", "office", "--json"))
    assert added["lifted"] == [ATTACKER] and ATTACKER not in glab.ban_set()
    time.sleep(1.5)  # the guard takes operator commands within a second
    before = allowed_verdicts(glab)
    svcrack(glab, ATTACKER)
    assert ATTACKER not in glab.ban_set()
    deadline = time.monotonic() + 3  # counters are published every second
    while allowed_verdicts(glab) < before + 12 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert allowed_verdicts(glab) >= before + 12  # judged, as allow-listed
    fg(glab, "allow", "remove", ATTACKER)
    time.sleep(1.5)
    svcrack(glab, ATTACKER)
    assert ATTACKER in glab.ban_set()
