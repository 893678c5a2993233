"""Attack: a guesser rotating through the addresses of its IPv6 /64 (issue 13, item 6), through
the real guard in front of Kamailio and of floodguard's own registrar.

Before, the engine and the ban set worked per /128: five guesses from each address of one /64
gave 40/40 answered and no ban. Now the /64 is one source: three addresses taking turns get at
most 6 (+2) wrong answers between them, the /64 lands in the kernel's per-prefix ban set (the
guard's raw netlink writer), a fourth address of it is dropped before the registrar, and a phone
in the next /64 registers as usual.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.integration.guardkit import GuardLab

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save",
                              "kamailio")

GUESSER = Path(__file__).with_name("guesser.py")
SERVER6 = "fd00:fa::1"
ROTATION = ["fd00:fa:0:1::a", "fd00:fa:0:1::b", "fd00:fa:0:1::c"]
LATE = "fd00:fa:0:1::d"
PHONE6 = "fd00:fa:0:2::2"


def _add_v6(glab: GuardLab) -> None:
    tag = glab.server.name.split("-")[1]
    glab.server.run("ip", "-6", "addr", "add", f"{SERVER6}/48", "dev", f"fg{tag}s", "nodad")
    for address in [*ROTATION, LATE, PHONE6]:
        glab.client.run("ip", "-6", "addr", "add", f"{address}/48", "dev", f"fg{tag}c", "nodad")


def _guess(glab: GuardLab, src: str, guesses: int, check: bool = True) -> dict[str, int]:
    """``check=False``: the source may be dropped, and its first REGISTER is sent twice (1.5 s)
    instead of a phone's three times (3.5 s) before it counts as unanswered."""
    result = glab.client.run(sys.executable, str(GUESSER), "--src", src, "--server", SERVER6,
                             "--transports", "udp", "--guesses", str(guesses), "--gap", "0.2",
                             "--challenge-tries", "3" if check else "2", check=check)
    return json.loads(result.stdout) if result.returncode == 0 else {"wrong": 0, "failed": 1}


@pytest.mark.parametrize("registrar", ["kamailio", "floodguard"])
def test_rotating_inside_a_64_is_one_source(glab: GuardLab, registrar: str) -> None:
    _add_v6(glab)
    glab.write_config('[scanner]\nuser_agents = []\n')
    glab.apply()
    if registrar == "kamailio":
        glab.start_kamailio(extra_listen=(f"udp:[{SERVER6}]:5060",))
    else:
        glab.start_registrar(extra_listen=(f"[{SERVER6}]:5060",))
    glab.start_guard()
    wrong = 0
    for round_ in range(3):
        for src in ROTATION:
            result = _guess(glab, src, 1, check=round_ == 0)
            wrong += result["wrong"]
    assert 6 <= wrong <= 6 + 2, wrong
    events = [e for e in glab.events() if e["event"] in ("suspend", "ban")]
    assert events and events[0]["ip"] == "fd00:fa:0:1::", glab.events()
    members = glab.server.run("ipset", "list", "floodguard-ban-net6").stdout
    assert "fd00:fa:0:1::/64" in members, members
    # a fresh address of that /64 gets no challenge: dropped in raw PREROUTING
    assert _guess(glab, LATE, 1, check=False).get("failed") == 1
    # the next /64 is another source
    assert _guess(glab, PHONE6, 1)["wrong"] == 1
