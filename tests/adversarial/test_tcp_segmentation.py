"""Attack: TCP segmentation games (issue 13, item 5).

The guard judged each TCP segment on its own: a segment that did not start a whole message
passed unjudged and only the first message of a segment was read. Writing each REGISTER in two
send() calls got 40/40 guesses answered; six REGISTERs pipelined in one segment, or a long
Call-ID with MSS 536 that splits the 401, escaped too. Now each TCP flow is reassembled and
every message in it, and every answer, is judged once whatever the segmentation: the guesser
is suspended after 6 proven failures (at most 8 wrong answers) in front of Kamailio and of
floodguard's own registrar.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import CLIENTS4, SERVER4
from tests.integration.guardkit import GuardLab, start

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save",
                              "kamailio", "sipp")

GUESSER = Path(__file__).with_name("guesser.py")
ATTACKER, PHONE = CLIENTS4[0], CLIENTS4[1]
TRICKS = {
    "split-writes": ["--split"],
    "pipelined": ["--pipeline", "6"],
    "mss-536-long-call-id": ["--mss", "536", "--call-id-pad", "1200"],
}


@pytest.mark.parametrize("registrar", ["kamailio", "floodguard"])
@pytest.mark.parametrize("trick", sorted(TRICKS))
def test_tcp_tricks_are_counted(glab: GuardLab, registrar: str, trick: str) -> None:
    start(glab, registrar=registrar)
    out = glab.client.run(sys.executable, str(GUESSER), "--src", ATTACKER, "--server",
                          SERVER4, "--transports", "tcp", "--guesses", "14", "--gap", "0.1",
                          *TRICKS[trick]).stdout
    result = json.loads(out)
    assert result["wrong"] <= 6 + 2, result
    events = [e for e in glab.events() if e["event"] in ("suspend", "ban")]
    assert events and events[0]["ip"] == ATTACKER and events[0]["failures"] <= 6, glab.events()
    assert ATTACKER in glab.ban_set()
    phone = glab.sipp_register(PHONE, [("1002", "secret1002")], calls=2, rate=2, port=5071,
                               transport="t1")
    assert phone["successful"] == 2 and phone["failed"] == 0
