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


PASS_SCRIPT = r"""
import json
from floodguard.kernel import KernelError
from floodguard.kernel.ipset import SetManager
from floodguard.kernel.ipset_netlink import NetlinkSetWriter
from floodguard.kernel.rules import SetSpec
specs = [SetSpec("pass", "fgt-pass", 4, "hash:ip,port", 600, 16, 64),
         SetSpec("pass", "fgt-pass6", 6, "hash:ip,port", 600, 16, 64)]
w = NetlinkSetWriter(specs)
w.add("pass", "192.0.2.7,udp:5062", 300)
w.add("pass", "2001:db8::7,udp:5064", 60)
out = {}
try:
    w.add("pass", "192.0.2.7,udp:", 60)
    out["bad"] = None
except KernelError as exc:
    out["bad"] = str(exc)
with SetManager(specs) as sets:
    sets.add("pass", "192.0.2.8,udp:6000", 120)
    out["test"] = [sets.test("pass", "192.0.2.7,udp:5062"),
                   sets.test("pass", "192.0.2.7,udp:5063")]
    out["list"] = sorted(entry for entry, _ in sets.list("pass"))
    out["removed"] = [w.remove("pass", "192.0.2.8,udp:6000"),
                      sets.remove("pass", "2001:db8::7,udp:5064")]
print(json.dumps(out))
"""


def test_pass_entries_are_address_and_udp_port_on_both_writers(make_netns: Any) -> None:
    """The lockdown's pass set (hash:ip,port) through the guard's netlink writer and through
    SetManager (the CLI's, explain's), read back by the ipset tool."""
    ns = make_netns("nlp")
    ns.run("ipset", "create", "fgt-pass", "hash:ip,port", "timeout", "600", "maxelem", "16")
    ns.run("ipset", "create", "fgt-pass6", "hash:ip,port", "family", "inet6", "timeout", "600",
           "maxelem", "16")
    out = json.loads(ns.run(sys.executable, "-c", PASS_SCRIPT).stdout)
    assert out["bad"] and "not an address,proto:port entry" in out["bad"], out
    assert out["test"] == [True, False], out
    assert out["list"] == ["192.0.2.7,udp:5062", "192.0.2.8,udp:6000",
                           "2001:db8::7,udp:5064"], out
    assert out["removed"] == [True, True], out
    v4 = ns.run("ipset", "list", "fgt-pass").stdout
    assert "192.0.2.7,udp:5062 timeout" in v4 and "6000" not in v4, v4
    assert "2001:db8::7" not in ns.run("ipset", "list", "fgt-pass6").stdout
