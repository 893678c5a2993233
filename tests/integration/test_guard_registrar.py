"""The guard in front of floodguard's own registrar: the same proofs as in front of Kamailio."""

from __future__ import annotations

import pytest

from .conftest import CLIENTS4
from .guardkit import GuardLab, start, svcrack

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save", "sipp",
                              "svcrack")

ATTACKER, PHONE, NAT, _ = CLIENTS4


def test_svcrack_banned_phones_register_nobody_framed(glab: GuardLab) -> None:
    start(glab, registrar="floodguard")
    svcrack(glab, ATTACKER)
    bans = glab.ban_set()
    assert ATTACKER in bans, glab.events()
    ban = [e for e in glab.events() if e["event"] in ("suspend", "ban")][0]
    assert ban["ip"] == ATTACKER and ban["failures"] <= 6
    result = glab.sipp_register(PHONE, [("1002", "secret1002")], calls=5, rate=2, port=5077)
    assert result["successful"] == 5 and result["failed"] == 0
    known = glab.server.run("ipset", "list", "floodguard-known").stdout
    assert PHONE in known and PHONE not in glab.ban_set()
