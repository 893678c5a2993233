"""Attack: a flood of REGISTERs with made-up credentials (issue 15, item 2).

A botnet that spoofs its sources cannot have received any challenge at those addresses, so its
credentials prove nothing: once the guard's first registration period is over (every phone
re-registered through it and picked up its token), such a REGISTER never reaches the
registrar, not even with its credentials taken out. A real phone that lost its token (it
registered before) still has its stale credentials taken out, so its registrar challenges it
afresh. Run in front of Kamailio and of floodguard's own registrar.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from floodguard.store import Store
from tests.adversarial.counterkit import published_verdicts
from tests.integration.conftest import CLIENTS4, SERVER4
from tests.integration.guardkit import GuardLab, start

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "kamailio", "sipp")

UDPSEND = Path(__file__).parents[1] / "integration" / "udpsend.py"
SPOOFED, PHONE = CLIENTS4[0], CLIENTS4[1]
# Within the per-source REGISTER burst (10) of both the kernel and the guard: every guess reaches
# the guard and its bucket, even when a busy CI machine stalls the guard and it then reads them all
# at once (20 guesses did: one was dropped as "rate:register" before the proof check saw it).
GUESSES = 10


def _deployed_long_ago(state_db: Path) -> None:
    """A store whose proof key (made at the guard's first start) is two hours old."""
    store = Store(state_db)
    try:
        store.secret("proof")
        key = store.load_snapshot("secret-proof")
        assert key is not None
        store.save_snapshot("secret-proof", key[1], now=time.time() - 7200)
    finally:
        store.close()


def _bogus(lab: GuardLab, src: str, count: int) -> dict[str, int]:
    out = lab.client.run(sys.executable, str(UDPSEND), "--src", src, "--sport", "5091",
                         "--dst", SERVER4, "--kind", "bogus-auth", "--count", str(count),
                         "--interval", "0.25", "--seconds", "30").stdout
    return json.loads(out)


@pytest.mark.parametrize("registrar", ["kamailio", "floodguard"])
def test_made_up_credentials_never_reach_the_registrar(glab: GuardLab, registrar: str) -> None:
    _deployed_long_ago(glab.tmp / "state.db")
    start(glab, registrar=registrar)
    flood = _bogus(glab, SPOOFED, GUESSES)
    assert flood == {"sent": GUESSES, "answered": 0}, flood
    verdicts = published_verdicts(glab.tmp / "state.db")
    assert verdicts.get("drop:unproven") == GUESSES, verdicts
    assert not verdicts.get("proof:stripped"), verdicts
    # a phone that registered is known-good: its stale credentials are taken out instead
    assert glab.sipp_register(PHONE, [("1002", "secret1002")], calls=2, rate=2,
                              port=5072)["successful"] == 2
    time.sleep(1.5)  # the known-good mark is written from the guard's next tick
    stale = _bogus(glab, PHONE, 1)
    assert stale["answered"] == 1, stale  # challenged afresh
    assert published_verdicts(glab.tmp / "state.db").get("proof:stripped") == 1
