"""The token budget class is for sources the registrar challenged (issue 15), on the real
kernel with both backends: a 401/407 leaving the SIP port puts its destination in the
challenged set (IPv6 per prefix), and only from there does a packet carrying the guard's token
prefix ``fg1.`` get the token class, once per challenge; from anywhere else the prefix buys
nothing and the packet meets the admission budget like any other.
"""

from __future__ import annotations

import sys

import pytest

from .conftest import CLIENTS4, CLIENTS6, SERVER4, SERVER6, Lab
from .test_kernel_order import SLACK, counters, flood, packets

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save")

CHALLENGED, STRANGER = 1, 3  # index into CLIENTS4 / CLIENTS6 (2 is on the allow list)
COUNT = 45  # under the per-source SIP burst (50): only the class budgets can drop
BUDGET = 20
CHALLENGE = """
import socket, sys
src, dst, status = sys.argv[1], sys.argv[2], sys.argv[3]
family = socket.AF_INET6 if ":" in src else socket.AF_INET
with socket.socket(family, socket.SOCK_DGRAM) as sock:
    sock.bind((src, 5060))
    sock.sendto(f"SIP/2.0 {status} Unauthorized\\r\\nContent-Length: 0\\r\\n\\r\\n".encode(),
                (dst, 5070))
"""


def challenge(lab: Lab, dst: str, status: int) -> None:
    """The registrar's side answers ``dst`` with a 401 or 407 from the SIP port."""
    src = SERVER6 if ":" in dst else SERVER4
    lab.server.run(sys.executable, "-c", CHALLENGE, src, dst, str(status))


def in_set(lab: Lab, name: str, address: str) -> bool:
    return lab.server.run("ipset", "test", name, address, check=False).returncode == 0


def test_only_a_challenged_source_may_use_the_token_class(lab: Lab) -> None:
    config = lab.config(f'[limits]\nqueue_budget = {BUDGET}\n[admission]\nmode = "static"\n')
    lab.apply(config)
    challenge(lab, CLIENTS4[CHALLENGED], 401)
    challenge(lab, CLIENTS6[CHALLENGED], 407)
    assert in_set(lab, "floodguard-challenged", CLIENTS4[CHALLENGED])
    assert not in_set(lab, "floodguard-challenged", CLIENTS4[STRANGER])
    # IPv6 per /64 (limits.ipv6_prefix), like the ban and known sets
    neighbour = CLIENTS6[CHALLENGED].rsplit(":", 1)[0] + ":99"
    assert in_set(lab, "floodguard-challenged-v6", neighbour)
    assert not in_set(lab, "floodguard-challenged-v6", CLIENTS6[STRANGER])
    listed = lab.server.run("ipset", "list", "floodguard-challenged-v6").stdout
    assert "netmask 64 timeout 32" in listed, listed

    for family, sources in ((4, CLIENTS4), (6, CLIENTS6)):
        flood(lab, [sources[CHALLENGED], sources[STRANGER]], COUNT, kind="token")
        rules = counters(lab, family)
        # the challenged source's first token used the class, once: its challenge is used up
        assert packets(rules, "FLOODGUARD-LIMIT", "-g FLOODGUARD-ANSWER") == 1, rules
        assert packets(rules, "FLOODGUARD-ANSWER", "--del-set") == 1
        assert packets(rules, "FLOODGUARD-LIMIT", "fg-pro-", "DROP") == 0
        # the rest of it, and everything from the stranger who forged the prefix, met the
        # budget like packets without a token
        over_budget = packets(rules, "FLOODGUARD-LIMIT", "fg-bud-", "DROP")
        assert BUDGET <= 2 * COUNT - 1 - over_budget <= BUDGET + 2 * SLACK, (family, rules)
        assert packets(rules, "FLOODGUARD-OUT", "--add-set floodguard-challenged") == 1
    assert not in_set(lab, "floodguard-challenged", CLIENTS4[CHALLENGED])
    assert not in_set(lab, "floodguard-challenged-v6", neighbour)
    # a new challenge lets the next answer in again
    challenge(lab, CLIENTS4[CHALLENGED], 401)
    flood(lab, CLIENTS4[CHALLENGED], 1, kind="token")
    assert packets(counters(lab, 4), "FLOODGUARD-ANSWER", "--del-set") == 2
