"""Attack: poisoned fleet entries written straight into Redis (by anyone who can write to it).

A ``failures`` of 10**23 used to make every pull fail in SQLite, so the link never came up and
no fleet ban reached the node again. Now each bad entry is reported (``fleet_invalid``) and
skipped, and the sweep deletes it from Redis. Two guards in namespaces share a real
redis-server; the poison is written before they start (the pull at start reads it) and
published while they run. Good entries around it must land in the real kernel ban sets, and
the link must keep working.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from floodguard.addr import source_key
from tests.integration.fleetkit import Fleet, build, wait_for

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save",
                              "redis-server")

GOOD = ["198.51.100.1", "198.51.100.2", "2001:db8::51"]


def entry(ip: str, now: float, **over: Any) -> str:
    return json.dumps({"op": "ban", "ip": ip, "ts": now, "until": now + 600, "node": "evil",
                       "kind": "manual", "reason": "poison", "failures": 1, **over})


def kernel_bans(fleet: Fleet, name: str) -> set[str]:
    """Both ban sets of a node, read with the ipset tool, as the sources they stand for (the
    IPv6 set holds each source's /64, e.g. 2001:db8:: for 2001:db8::51)."""
    out: set[str] = set()
    for set_name in ("floodguard-ban", "floodguard-ban-net6"):
        text = fleet.nodes[name].server.run("ipset", "list", set_name).stdout
        out.update(line.split()[0].split("/")[0]
                   for line in text.split("Members:", 1)[1].splitlines() if line.strip())
    return out


@pytest.fixture
def fleet(make_netns: Any, tmp_path: Path) -> Iterator[Fleet]:
    lab = build(make_netns, tmp_path, names=("a", "b"))
    yield lab
    lab.stop()


def test_poisoned_fleet_entries_are_skipped_and_the_rest_reaches_the_kernel(
        fleet: Fleet) -> None:
    now = time.time()
    poison = {
        "192.0.2.50": entry("192.0.2.50", now, failures=10**23),
        "192.0.2.51": entry("192.0.2.51", now, until=1e300),
        "192.0.2.52": entry("192.0.2.52", now, ts=now + 10 * 86400),
        "0.0.0.0": entry("0.0.0.0", now),
        "192.0.2.53": "[" * 3000 + "]" * 3000,
    }
    args = [x for ip, value in {**poison, **{ip: entry(ip, now) for ip in GOOD}}.items()
            for x in (ip, value)]
    fleet.redis_cli("hset", "floodguard:bans", *args)
    fleet.start_node("a")
    fleet.start_node("b")
    for name in "ab":
        assert wait_for(lambda n=name: fleet.events(n, "fleet_up"), 10), fleet.events(name)
        banned = kernel_bans(fleet, name)
        assert all(source_key(ip) in banned for ip in GOOD), (banned, fleet.events(name))
        assert not any(ip.startswith("192.0.2.") or ip == "0.0.0.0" for ip in banned), banned
        assert "is banned" in fleet.floodguard(name, "blacklist", "explain", GOOD[0])
    # a (started first) read and reported the poison; its sweep then deleted it from Redis
    invalid = fleet.events("a", "fleet_invalid")
    assert sum(e["count"] for e in invalid) == len(poison), invalid
    assert any("failures 100000000000000000000000" in x for x in invalid[0]["examples"])
    assert wait_for(lambda: not any(fleet.redis_cli("hexists", "floodguard:bans", ip).stdout
                                    .strip() == "1" for ip in poison), 5)

    # while they run: poison published on the channel, then a real ban made on a
    changes = [json.loads(entry("192.0.2.60", time.time(), failures=10**30)),
               {"op": "known", "ip": "::", "ts": time.time(), "until": time.time() + 60},
               json.loads(entry("198.51.100.3", time.time()))]
    fleet.redis_cli("publish", "floodguard", json.dumps({"node": "evil", "changes": changes}))
    fleet.redis_cli("publish", "floodguard", "garbage")
    assert wait_for(lambda: "198.51.100.3" in kernel_bans(fleet, "b"), 5), fleet.events("b")
    fleet.scripted_bans("a", ["203.0.113.77"], 0)
    assert wait_for(lambda: "203.0.113.77" in kernel_bans(fleet, "b"), 5), fleet.events("b")
    assert "192.0.2.60" not in kernel_bans(fleet, "b")
    for name in "ab":
        assert not fleet.events(name, "fleet_error"), fleet.events(name, "fleet_error")
        assert not fleet.events(name, "fleet_down"), fleet.events(name, "fleet_down")
    status = json.loads(fleet.floodguard("b", "fleet", "status", "--json"))
    assert status["link"]["up"] and status["redis"]["ok"], status
