"""Attack: kill -9 of the guard in the middle of a guessing burst (issue 13, item 8).

The engine is snapshotted every 5 s; a crash lost the failures counted since the last one, so
a guesser who kept going through a restart got a fresh six each time (10 sources x 8 guesses
went through unbanned). Now every proven failure is journaled as it is counted, the proof key
lives in the store (tokens handed out before the crash still prove receipt after it), and the
guard counts the journal again at start. Across a crash no source gets more than 6 (+2 in
flight) wrong-password answers. Run in front of Kamailio and of floodguard's own registrar.
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


def _guess(glab: GuardLab, guesses: int) -> dict[str, int]:
    out = glab.client.run(sys.executable, str(GUESSER), "--src", ATTACKER, "--server",
                          SERVER4, "--user", "1001", "--guesses", str(guesses)).stdout
    return json.loads(out)


@pytest.mark.parametrize("registrar", ["kamailio", "floodguard"])
def test_a_crash_hands_the_guesser_no_fresh_count(glab: GuardLab, registrar: str) -> None:
    start(glab, registrar=registrar)
    first = _guess(glab, 4)
    assert first["wrong"] == 4, first
    assert not [e for e in glab.events() if e["event"] in ("suspend", "ban")]
    # SIGKILL every guard process (supervisor and workers), then start it again as systemd would
    assert glab.config_path is not None and glab.guard is not None
    glab.server.sh(f"pkill -KILL -f 'floodguard run -c {glab.config_path}'", check=False)
    glab.guard.wait(timeout=10)
    glab.start_guard()
    second = _guess(glab, 8)
    assert first["wrong"] + second["wrong"] <= 6 + 2, (first, second)
    events = [e for e in glab.events() if e["event"] in ("suspend", "ban")]
    assert events and events[0]["ip"] == ATTACKER, glab.events()
    assert ATTACKER in glab.ban_set()
    result = glab.sipp_register(PHONE, [("1002", "secret1002")], calls=2, rate=2, port=5071)
    assert result["successful"] == 2 and result["failed"] == 0
