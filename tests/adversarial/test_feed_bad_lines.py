"""Attack: a blocklist feed with lines that cannot be banned (0.0.0.0, ``::``, multicast,
loopback, junk, an over-long line). One ``0.0.0.0`` line used to abort the whole import on every
run. Now each bad line is skipped and counted and the good addresses reach the real kernel ban
sets of a namespace where ``floodguard apply`` ran.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.adversarial.feedkit import FEED_RUN
from tests.integration.conftest import Lab

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save")

BAD = ["0.0.0.0", "::", "224.0.0.251", "ff02::fb", "127.0.0.1", "255.255.255.255",
       "not-an-ip", "10.0.0.0/8", "x" * 4000]
GOOD = ["198.51.100.20", "2001:db8::20", "::ffff:198.51.100.21", "203.0.113.22"]


def members(lab: Lab, name: str) -> set[str]:
    text = lab.server.run("ipset", "list", name).stdout
    return {line.split()[0] for line in text.split("Members:", 1)[1].splitlines()
            if line.strip()}


def test_bad_feed_lines_are_skipped_and_the_rest_lands_in_the_ban_set(lab: Lab) -> None:
    feed = lab.tmp / "list.txt"
    lines = [x for pair in zip(BAD, GOOD * 3, strict=False) for x in pair]
    feed.write_text("# a feed with junk in it\n" + "\n".join(lines) + "\n", encoding="utf-8")
    config = lab.config(f'[[feed]]\nname = "apiban"\nsource = "{feed}"\nban_time = 900\n')
    lab.apply(config)
    out = lab.server.run(sys.executable, "-c", FEED_RUN, str(config)).stdout
    events = [json.loads(line) for line in out.splitlines()]
    # every ban is logged by the enforcement path, then the import's summary
    assert [e["event"] for e in events] == ["ban"] * 4 + ["feed_imported"], out
    assert {e["by"] for e in events[:4]} == {"feed"}
    event = events[-1]
    assert event["banned"] == 4 and event["skipped"] == len(BAD), event
    assert event["skipped_examples"][0] == "line 2: '0.0.0.0' is the unspecified address"
    assert members(lab, "floodguard-ban") == {"198.51.100.20", "198.51.100.21", "203.0.113.22"}
    # IPv6 sources are banned per /64 (limits.ipv6_prefix)
    assert members(lab, "floodguard-ban-net6") == {"2001:db8::/64"}
    explain = lab.server.floodguard("blacklist", "explain", "::ffff:198.51.100.21", "-c",
                                    str(config)).stdout
    assert explain.startswith("198.51.100.21 is banned") and "feed:apiban" in explain
