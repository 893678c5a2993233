"""Attack: one account guessed from many addresses at once (issue #16 item 4).

No source fails often enough to be suspended, so per-source counting never stops this; before,
the guessers got an answer for every guess as long as the attack lasted. Now proven failures on
the account from ``account.sources`` (5) distinct sources within the window protect it: every
REGISTER for it from a source that is not one of its known-good pairs is dropped, so the
guessers get only the handful of answers that came before (and the in-flight ones), while the
owner, registered before from its own address, keeps registering every time.

The real stack in namespaces: kernel rules, the guard, floodguard's own registrar or Kamailio;
100 guessers, one wrong guess each every 10 s (10 guesses/s at the account), for 10 s.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import CLIENTS4, SERVER4
from tests.integration.guardkit import GuardLab, start

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save",
                              "kamailio")

DRIVER = Path(__file__).with_name("distributed.py")
ROOT = Path(__file__).resolve().parents[2]
OWNER = CLIENTS4[1]
GUESSERS = [f"10.250.0.{100 + i}" for i in range(100)]
USER = "1001"


@pytest.mark.parametrize("registrar", ["floodguard", "kamailio"])
def test_many_sources_guessing_one_account_protect_it_and_its_owner_registers(
        glab: GuardLab, registrar: str) -> None:
    device = glab.client.run("ip", "-o", "addr", "show", "to", CLIENTS4[0]).stdout.split()[1]
    for address in GUESSERS:
        glab.client.run("ip", "addr", "add", f"{address}/24", "dev", device)
    start(glab, registrar=registrar)
    out = glab.client.run(
        sys.executable, str(DRIVER), "--server", SERVER4, "--owner", OWNER,
        "--sources", ",".join(GUESSERS), "--user", USER, "--duration", "10",
        env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    result = json.loads(out)
    owner, guesses = result["owner"], result["guesses"]
    events = glab.events()
    protects = [e for e in events if e["event"] == "protect"]
    # the owner registered every time (every 2 s), before and after the protection began
    assert owner["failed"] == 0 and owner["ok"] >= 4, owner
    # the account was protected once, after five distinct guessers
    assert len(protects) == 1, events
    assert protects[0]["aor"].split("@")[0] == USER and protects[0]["sources"] == 5
    # the guessers got the five answers that protected it and at most the in-flight ones;
    # without protection every one of the ~100 guesses is answered
    answered = [g for g in guesses if g[1] is not None]
    assert len(guesses) >= 90, len(guesses)
    assert 5 <= len(answered) <= 5 + 30, answered
    assert all(status in (401, 403) for _, status in answered), answered
    # no guesser, nor the owner, was suspended or banned: nothing stops a source here
    assert not glab.ban_set(), glab.ban_set()
    assert not [e for e in events if e["event"] in ("ban", "suspend")], events
    # `floodguard explain` shows the protection
    report = json.loads(glab.server.floodguard("explain", USER, "--json", "-c",
                                               str(glab.config_path)).stdout)
    assert [p["aor"].split("@")[0] for p in report["protections"]] == [USER], report
    assert report["verdict"].startswith("protected"), report
