"""Attack: an allow list written with IPv4-mapped IPv6 (``::ffff:a.b.c.d``).

The kernel sees such a peer as plain IPv4, so ``::ffff:10.250.0.4/128`` used to land in the
IPv6 allow set where no packet ever matches it, while the guard treated it as IPv4: the kernel
rate-limited a source the guard called allow-listed. Now every module reads it as IPv4: the real
``floodguard apply`` puts it in the IPv4 allow set, and the CLI, feeds and the fleet agree.
"""

from __future__ import annotations

import ipaddress
import json
import sys

import pytest

from tests.integration.conftest import CLIENTS4, Lab

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save")

TRUSTED = CLIENTS4[3]
MAPPED = f"::ffff:{TRUSTED}"
AS_CONFIGURED = str(ipaddress.ip_network(f"{MAPPED}/128"))  # the config normalises the text
# the guard's answer (policy.netset), the fleet's and the CLI's, inside the namespace
AGREE = """
import sys, json
from floodguard.bans import allowed_by
from floodguard.config import load
from floodguard.fleet import Applier, check_change
from floodguard.kernel.ipset import SetManager
from floodguard.kernel.rules import render
from floodguard.policy.netset import NetSet
from floodguard.store import Store
import time
cfg = load(sys.argv[1])
ip = sys.argv[2]
sets = SetManager(render(cfg).sets)
now = time.time()
change = check_change({"op": "ban", "ip": ip, "ts": now, "until": now + 600, "node": "x"}, now)
result = Applier(cfg, Store(cfg.state.path), sets).apply([change])
print(json.dumps({"guard": ip in NetSet(cfg.blacklist.allow), "bans": allowed_by(cfg, ip),
                  "fleet": [a[1] for a in result.allowed], "fleet_banned": result.bans,
                  "kernel_test": sets.test("allow", change["ip"])}))
"""


def members(lab: Lab, name: str) -> set[str]:
    text = lab.server.run("ipset", "list", name).stdout
    return {line.split()[0] for line in text.split("Members:", 1)[1].splitlines()
            if line.strip()}


def test_mapped_allow_entry_is_ipv4_in_the_kernel_and_everywhere(lab: Lab) -> None:
    config = lab.tmp / "mapped.toml"
    feed = lab.tmp / "feed.txt"
    feed.write_text(f"{MAPPED}\n{TRUSTED}\n198.51.100.30\n", encoding="utf-8")
    config.write_text(
        f'[state]\npath = "{lab.tmp / "state.db"}"\n'
        f'[blacklist]\nallow = ["127.0.0.0/8", "::1/128", "{MAPPED}/128"]\n'
        f'[[feed]]\nname = "f"\nsource = "{feed}"\n', encoding="utf-8")
    dry = lab.server.floodguard("apply", "--dry-run", "-c", str(config)).stdout
    assert f"add floodguard-allow {TRUSTED}\n" in dry and "::ffff:" not in dry
    lab.apply(config)
    assert TRUSTED in members(lab, "floodguard-allow")
    assert not any("ffff" in m for m in members(lab, "floodguard-allow-v6"))
    lab.server.run("ipset", "test", "floodguard-allow", TRUSTED)
    # the CLI, with the address written either way
    for written in (TRUSTED, MAPPED):
        added = lab.server.floodguard("blacklist", "add", written, "-c", str(config),
                                      check=False)
        assert added.returncode == 4 and "allow list" in added.stderr, added
        explain = lab.server.floodguard("blacklist", "explain", written, "-c",
                                        str(config)).stdout
        assert explain.startswith(f"{TRUSTED} is in the allow list ({AS_CONFIGURED})")
    assert TRUSTED not in members(lab, "floodguard-ban")
    # the fleet, the guard's allow list and the kernel agree
    for written in (TRUSTED, MAPPED):
        out = lab.server.run(sys.executable, "-c", AGREE, str(config), written).stdout
        assert json.loads(out) == {"guard": True, "bans": AS_CONFIGURED,
                                   "fleet": [AS_CONFIGURED], "fleet_banned": [],
                                   "kernel_test": True}, out
    # a feed listing it either way: allow-listed, never in the ban set
    from tests.adversarial.feedkit import FEED_RUN

    out = lab.server.run(sys.executable, "-c", FEED_RUN, str(config)).stdout
    event = json.loads(out.splitlines()[-1])
    assert event["banned"] == 1 and event["allowed"] == 1, event
    assert members(lab, "floodguard-ban") == {"198.51.100.30"}
