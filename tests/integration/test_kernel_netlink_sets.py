"""The guard's hot-path set writer (one raw netlink message per entry) on the real kernel."""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save")

SCRIPT = r"""
import json
from floodguard.kernel import SetFullError
from floodguard.kernel.ipset_netlink import NetlinkSetWriter
from floodguard.kernel.rules import SetSpec
specs = [SetSpec("ban", "fgt-ban", 4, "hash:ip", 0, 3, 64),
         SetSpec("ban", "fgt-ban6", 6, "hash:ip", 0, 3, 64)]
w = NetlinkSetWriter(specs)
out = {}
w.add("ban", "192.0.2.7", 180)
w.add("ban", "192.0.2.7", 300)          # renews the timeout
w.add("ban", "2001:db8::7", 60)
w.add("ban", "192.0.2.8", None)         # the set's default timeout (0: none)
w.add("ban", "192.0.2.9", 10)
try:
    w.add("ban", "192.0.2.10", 10)
    out["full"] = False
except SetFullError as exc:
    out["full"] = str(exc)
out["removed"] = w.remove("ban", "192.0.2.9")
out["removed_again"] = w.remove("ban", "192.0.2.9")
print(json.dumps(out))
"""


def test_add_renew_remove_full_on_both_families(make_netns: Any) -> None:
    ns = make_netns("nl")
    ns.run("ipset", "create", "fgt-ban", "hash:ip", "timeout", "0", "maxelem", "3")
    ns.run("ipset", "create", "fgt-ban6", "hash:ip", "family", "inet6", "timeout", "0",
           "maxelem", "3")
    out = json.loads(ns.run(sys.executable, "-c", SCRIPT).stdout)
    assert out["full"] and "fgt-ban is full: 192.0.2.10" in out["full"]
    assert out["removed"] is True and out["removed_again"] is False
    v4 = ns.run("ipset", "list", "fgt-ban").stdout
    members = v4.split("Members:")[1].split()
    timeouts = {members[i - 1]: int(members[i + 1])
                for i, t in enumerate(members) if t == "timeout"}
    assert 290 <= timeouts["192.0.2.7"] <= 300
    assert timeouts["192.0.2.8"] == 0
    assert "192.0.2.9" not in timeouts
    assert "2001:db8::7" in ns.run("ipset", "list", "fgt-ban6").stdout
