"""Attack: password guessing over TLS (issue 13, item 5, TLS).

The guard cannot read TLS, so a guesser could take its time there. floodguard's own registrar
now tells the guard the outcome of every authenticated REGISTER over TLS through the shared
state database (the TLS connection proves the source), and the kernel holds the TLS port to
the per-source limits and the ban set: the guesser is suspended after 6 wrong passwords and
its next connection dies in raw PREROUTING.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import CLIENTS4, SERVER4
from tests.integration.guardkit import GuardLab
from tests.integration.registrar_helpers import self_signed

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save", "sipp")

GUESSER = Path(__file__).with_name("guesser.py")
ATTACKER, PHONE = CLIENTS4[0], CLIENTS4[1]


def test_tls_guesses_are_counted_through_the_registrars_reports(glab: GuardLab) -> None:
    cert, key = self_signed(glab.tmp, SERVER4)
    glab.write_config('[scanner]\nuser_agents = []\n')
    glab.apply()
    glab.start_registrar(tls=(cert, key))
    glab.start_guard()
    out = glab.client.run(sys.executable, str(GUESSER), "--src", ATTACKER, "--server",
                          SERVER4, "--transports", "tls", "--guesses", "14",
                          "--gap", "0.3").stdout
    result = json.loads(out)
    assert result["challenges"] == {"tls": 1}
    # reports are taken every half second: a guess or two more may be answered in between
    assert 6 <= result["wrong"] <= 6 + 2, result
    events = [e for e in glab.events() if e["event"] in ("suspend", "ban")]
    assert events and events[0]["ip"] == ATTACKER and events[0]["failures"] <= 6, glab.events()
    assert ATTACKER in glab.ban_set()
    # the kernel drops the banned source's new TLS connection before it reaches the registrar
    again = glab.client.run(sys.executable, str(GUESSER), "--src", ATTACKER, "--server",
                            SERVER4, "--transports", "tls", "--guesses", "1", check=False)
    assert again.returncode != 0, again.stdout
    phone = glab.sipp_register(PHONE, [("1002", "secret1002")], calls=2, rate=2, port=5071)
    assert phone["successful"] == 2 and phone["failed"] == 0
