"""Attack: rotating IPv6 addresses inside one /64 (issue 13, item 6).

The kernel limited IPv6 per /64 but the engine and the ban set worked per /128, so a guesser
moving to a fresh address of its /64 was a fresh source. Now every per-source table, every
suspension and ban is keyed by the source's ``limits.ipv6_prefix`` network and the IPv6 ban and
known sets are hash:net of that prefix: a ban of one address of the /64 (by an operator through
the CLI, or by the guard through its raw netlink writer) stops every address of it in raw
PREROUTING, and leaves the neighbouring /64 alone. (The guard's own keying is pinned in
tests/unit/test_guard.py::test_ipv6_guesses_rotating_through_one_64_are_one_source.)
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.integration.conftest import CLIENTS6, NEIGHBOUR6, Lab

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save")

WRITER = """
import sys
from floodguard.config import load
from floodguard.kernel.ipset_netlink import NetlinkSetWriter
from floodguard.kernel.rules import render
writer = NetlinkSetWriter(render(load(sys.argv[1])).sets)
writer.add("ban", sys.argv[2], 600)
"""


def test_a_ban_covers_the_whole_64_and_only_it(lab: Lab) -> None:
    config = lab.config()
    lab.apply(config)
    # CLIENTS6[0] and NEIGHBOUR6 share a /64; CLIENTS6[1] and CLIENTS6[3] sit in others
    lab.server.floodguard("blacklist", "add", CLIENTS6[0], "--ttl", "600", "-c", str(config))
    lab.server.run(sys.executable, "-c", WRITER, str(config), "fd00:fa:0:4::77")
    members = lab.server.run("ipset", "list", "floodguard-ban-net6").stdout
    assert "fd00:fa:0:1::/64" in members and "fd00:fa:0:4::/64" in members, members
    listed = json.loads(lab.server.floodguard("blacklist", "list", "--json", "-c",
                                              str(config)).stdout)
    assert "fd00:fa:0:1::" in json.dumps(listed)
    sink = lab.start_sink()
    sent = lab.send([(NEIGHBOUR6, 5, "register"), (CLIENTS6[0], 5, "register"),
                     (CLIENTS6[3], 5, "register"), (CLIENTS6[1], 5, "register")], 2.0)
    got = lab.stop_sink(sink)
    assert sent["sent"][NEIGHBOUR6] >= 5
    assert NEIGHBOUR6 not in got and CLIENTS6[0] not in got, got  # the whole banned /64
    assert CLIENTS6[3] not in got, got  # banned by the guard's writer, per /64 as well
    assert got[CLIENTS6[1]]["REGISTER"] == sent["sent"][CLIENTS6[1]]  # the next /64 is free
    # lifting it by any address of the /64 lifts the /64
    lab.server.floodguard("blacklist", "remove", NEIGHBOUR6, "-c", str(config))
    assert "fd00:fa:0:1::/64" not in lab.server.run("ipset", "list",
                                                    "floodguard-ban-net6").stdout
