"""Attack: shared registrar nonces frame an innocent address (issue 13, item 2).

Kamailio with its stock auth settings (tests/assets/kamailio.cfg: no auth_checks_register)
gives every client challenged in the same second the same nonce. Before the proof token, an
attacker who spoofed a REGISTER from the victim and sent its own in the same second could
present "the victim's" nonce six times and get the victim suspended. Now the proof is the
guard's token in the digest opaque, bound to the address it was sent to: the spoofed guesses
carry none (or the attacker's), so their credentials are taken out, nothing is counted and the
victim keeps registering. Run in front of Kamailio and of floodguard's own registrar.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from tests.adversarial.counterkit import published_verdicts
from tests.integration.conftest import CLIENTS4, SERVER4
from tests.integration.guardkit import GuardLab, start

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save",
                              "kamailio", "sipp")

ATTACK = Path(__file__).with_name("shared_nonce_attack.py")
ATTACKER, VICTIM = CLIENTS4[0], CLIENTS4[1]


@pytest.mark.parametrize("registrar", ["kamailio", "floodguard"])
def test_shared_nonces_never_frame_the_victim(glab: GuardLab, registrar: str) -> None:
    start(glab, registrar=registrar)
    # the victim is a real phone: it registers through the guard (SIPp echoes the opaque)
    before = glab.sipp_register(VICTIM, [("1002", "secret1002")], calls=2, rate=2, port=5071)
    assert before["successful"] == 2 and before["failed"] == 0
    out = glab.client.run(sys.executable, str(ATTACK), "--attacker", ATTACKER, "--victim",
                          VICTIM, "--server", SERVER4, "--guesses", "8").stdout
    attack = json.loads(out)
    assert attack["guesses"] == 8
    if registrar == "kamailio":
        # the precondition of the attack holds: one nonce for both addresses
        assert attack["shared"], "Kamailio did not share its nonce within one second"
    time.sleep(1.5)
    assert VICTIM not in glab.ban_set()
    events = glab.events()
    assert not [e for e in events if e["event"] in ("suspend", "ban")], events
    if registrar == "kamailio":
        assert [e for e in events if e["event"] == "registrar_shared_nonces"], events
        assert glab.config_path is not None
        status = json.loads(glab.server.floodguard(
            "status", "--json", "-c", str(glab.config_path), check=False).stdout)
        assert any("more than one client" in note for note in status["notes"]), status
    counters = published_verdicts(glab.tmp / "state.db")
    assert counters.get("proof:stripped", 0) >= 8, counters
    after = glab.sipp_register(VICTIM, [("1002", "secret1002")], calls=2, rate=2, port=5072)
    assert after["successful"] == 2 and after["failed"] == 0
