"""Admission by measured capacity on the real stack (#15.1): Kamailio behind the rules and the
guard; the unknown-source budget in the kernel grows while Kamailio answers fast and the demand
presses on it, and is cut when Kamailio stops answering; status and events say why."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

from .conftest import CLIENTS4, SERVER4
from .guardkit import GuardLab, start

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "kamailio")

UDPSEND = Path(__file__).with_name("udpsend.py")
SOURCE = CLIENTS4[0]
# one source may send what the test needs (the per-source limits are not under test here)
CONFIG = ("[limits]\nregister_rate = 2000\nregister_burst = 2000\nsip_rate = 2000\n"
          "sip_burst = 2000\nqueue_budget = 3000\n[admission]\nstart = 300\nfloor = 50\n")


def _budget(lab: GuardLab) -> int:
    """The budget rule's rate as the kernel holds it (IPv4; in raw, before conntrack)."""
    saved = lab.server.run("iptables-nft-save", "-t", "raw").stdout
    found = re.search(r"known src -m hashlimit --hashlimit-above (\d+)/sec", saved)
    assert found is not None, saved
    return int(found[1])


def _send(lab: GuardLab, seconds: float, rate: float) -> dict[str, int]:
    out = lab.client.run(sys.executable, str(UDPSEND), "--src", SOURCE, "--sport", "5090",
                         "--dst", SERVER4, "--kind", "register", "--interval",
                         str(1 / rate), "--seconds", str(seconds)).stdout
    return json.loads(out)


def _kamailio_signal(lab: GuardLab, sig: str) -> None:
    lab.server.run("pkill", f"-{sig}", "-f", f"kamailio -f {lab.tmp}")


def _admission_events(lab: GuardLab) -> list[dict[str, object]]:
    return [e for e in lab.events() if e["event"] == "admission"]


def test_budget_follows_the_registrars_health(glab: GuardLab) -> None:
    start(glab, CONFIG)
    assert glab.kamailio is not None
    assert _budget(glab) == 300  # apply rendered the start rate
    sent = _send(glab, 8, 400)  # demand above the budget, every request answered at once
    assert sent["answered"] > 0.5 * sent["sent"], sent
    grown = _admission_events(glab)
    assert grown and grown[-1]["reason"] == "healthy and in demand", grown
    peak = int(grown[-1]["rate"])  # type: ignore[call-overload]
    assert peak > 300
    deadline = time.monotonic() + 10  # the rule keeper re-applies at once
    while _budget(glab) != peak and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _budget(glab) == peak
    # the rate's new rule is an update, never reported as a repair of flushed rules
    events = [e["event"] for e in glab.events()]
    assert "rules_updated" in events and "rules_repaired" not in events, events

    _kamailio_signal(glab, "STOP")  # the registrar stops answering (all its processes)
    try:
        _send(glab, 8, 200)
        cut = [e for e in _admission_events(glab) if "unanswered" in str(e["reason"])]
        assert cut, _admission_events(glab)
        low = int(cut[-1]["rate"])  # type: ignore[call-overload]
        assert low < peak
    finally:
        _kamailio_signal(glab, "CONT")
    deadline = time.monotonic() + 10
    while _budget(glab) > low and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _budget(glab) <= low
    assert glab.config_path is not None
    status = json.loads(glab.server.floodguard("status", "--json", "-c",
                                               str(glab.config_path), check=False).stdout)
    assert status["admission"]["rate"] == int(_admission_events(glab)[-1]["rate"])  # type: ignore[call-overload]
    assert "unanswered" in status["admission"]["reason"] or status["admission"]["history"]
