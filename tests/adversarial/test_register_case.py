"""Evasion: a REGISTER flood with the method in lower or mixed case (issue 13, item 9).

SIP method names are case-sensitive on paper, but the registrars floodguard protects (its own,
Kamailio) and the guard read ``register sip:`` as a REGISTER. The kernel's per-source REGISTER
limit (5/s, burst 10) matched the string "REGISTER sip" case-sensitively, so a flood written
``register sip:`` only met the much looser limit on all SIP (20/s, burst 50) and reached the
queue and the registrar at up to 4 times the REGISTER rate. The rule now matches with --icase.

One source per spelling floods at 50/s for 2 s (100 REGISTERs) into the real rules, with a sink
counting what arrives; the floods run one after another and the REGISTER-limit rule's counters
in ``floodguard show --json`` are read around each, so every spelling's drops are its own.
Lower case, mixed case (also in the URI scheme) and IPv6 behave like the upper-case flood.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import CLIENTS4, CLIENTS6, SERVER4, SERVER6, Lab

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save")

FLOOD = Path(__file__).with_name("registercase_flood.py")
RATE, SECONDS = 50, 2.0
# register_rate 5/s and register_burst 10 (the defaults) over the sending time, plus slack for
# the sender's scheduling; the all-SIP limit alone (20/s, burst 50) would pass about 90.
SLACK = 3
# CLIENTS4[2] is on the lab's allow list: it skips every limit.
VARIANTS = [
    ("register sip:", CLIENTS4[0]),
    ("ReGiStEr sIp:", CLIENTS4[1]),
    ("REGISTER sip:", CLIENTS4[3]),
    ("register sip:", CLIENTS6[0]),
]


def _register_drops(lab: Lab, config: Path) -> dict[int, int]:
    """Packets counted by the REGISTER-limit rule, per family."""
    rules = lab.server.show(config)["rules"]
    out = {}
    for family in (4, 6):
        reg = [r for r in rules if r["family"] == family and "fg-reg-" in r["rule"]]
        assert len(reg) == 1, reg
        assert "--icase" in reg[0]["rule"], reg[0]
        out[family] = int(reg[0]["packets"])
    return out


def test_register_flood_is_limited_in_any_letter_case(lab: Lab) -> None:
    config = lab.config()
    lab.apply(config)
    sink = lab.start_sink(seconds=60)
    results = {}
    for line, src in VARIANTS:
        family = 6 if ":" in src else 4
        before = _register_drops(lab, config)[family]
        out = json.loads(lab.client.run(
            sys.executable, str(FLOOD), "--src", src, "--dst", SERVER6 if family == 6 else SERVER4,
            "--line", line, "--rate", str(RATE), "--seconds", str(SECONDS)).stdout)
        after = _register_drops(lab, config)[family]
        results[src] = {"line": line, "sent": out["sent"], "elapsed": out["elapsed"],
                        "dropped": after - before}
    got = lab.stop_sink(sink)
    for src, res in results.items():
        method = res["line"].split(" ", 1)[0]
        arrived = got.get(src, {})
        assert set(arrived) <= {method}, (src, arrived)
        res["arrived"] = arrived.get(method, 0)
        assert res["sent"] == RATE * SECONDS, res
        limit = 10 + 5 * max(SECONDS, res["elapsed"]) + SLACK
        # the burst passes, the rest is cut to the REGISTER rate, whatever the letter case
        assert 10 <= res["arrived"] <= limit, (src, res)
        # and every packet that did not arrive was dropped by the REGISTER limit itself
        assert res["dropped"] == res["sent"] - res["arrived"], (src, res)
        assert res["dropped"] >= res["sent"] - limit, (src, res)
    upper = results[CLIENTS4[3]]
    for src in (CLIENTS4[0], CLIENTS4[1], CLIENTS6[0]):
        assert abs(results[src]["arrived"] - upper["arrived"]) <= SLACK, results
