"""Cheapest match first (issue 15, item 3), on the real kernel: a flood is dropped in raw
PREROUTING, before conntrack, by the cheapest rule that can drop it, and only what survives every
limit meets the scanner user-agent searches in filter.

The flood packets carry a scanner user agent ("friendly-scanner"), so the scanner rule's counter
is the number of packets that reached the string searches (a rule counts the packets it matches,
and every one of these would match). A probe rule in mangle PREROUTING, which runs right after
conntrack, counts the packets conntrack saw as NEW: every flood packet comes from a socket of its
own (a new source port), so each one that got past raw is a packet conntrack had to track.
"""

from __future__ import annotations

import re
import sys

import pytest

from .conftest import CLIENTS4, CLIENTS6, SERVER4, SERVER6, Lab

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save",
                              "conntrack")

BANNED, OVER, OTHER = 0, 1, 3  # index into CLIENTS4 / CLIENTS6 (2 is on the allow list)
COUNT = 200
# The REGISTER burst (10) passes, plus what the bucket refills (5/s) while the flood is sent.
SLACK = 3
# One datagram per socket, every packet a new conntrack tuple; the packets of every source are
# built first and then sent back to back, so a slow start (a loaded host) cannot let a limit
# refill between the sources.
FLOOD = """
import socket, sys
from floodguard.sip import build
from floodguard.sip.build import hostport
sources, dst, count, kind = sys.argv[1].split(","), sys.argv[2], int(sys.argv[3]), sys.argv[4]
ready = []
for src in sources:
    family = socket.AF_INET6 if ":" in src else socket.AF_INET
    for seq in range(count):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((src, 0))
        local, target = hostport(src, sock.getsockname()[1]), hostport(dst)
        if kind == "register":
            data = build.register(target, user="100", local=local, call_id=f"{seq}@fl",
                                  cseq=seq, expires=None, user_agent="friendly-scanner",
                                  branch=f"z9hG4bK{seq}", rport=False, tag=f"t{seq}")
        else:  # "token": an OPTIONS carrying the guard's public token prefix
            token = [f'Authorization: Digest username="100", opaque="fg1.x{seq}"'] \
                if kind == "token" else []
            data = build.options(f"sip:100@{target}", local=local, call_id=f"{seq}@fl",
                                 cseq=seq, contact=f"<sip:100@{local}>",
                                 user_agent="friendly-scanner", branch=f"z9hG4bK{seq}",
                                 rport=False, tag=f"t{seq}", headers=token)
        ready.append((sock, data))
for sock, data in ready:
    sock.sendto(data, (dst, 5060))
for sock, _ in ready:
    sock.close()
"""
COUNTED = re.compile(r"^\[(\d+):\d+\] -A (\S+) (.*)$")


def flood(lab: Lab, src: str | list[str], count: int, kind: str = "register") -> None:
    """``count`` datagrams from each source (one family per call)."""
    sources = [src] if isinstance(src, str) else src
    dst = SERVER6 if ":" in sources[0] else SERVER4
    lab.client.run(sys.executable, "-c", FLOOD, ",".join(sources), dst, str(count), kind)


def probe(lab: Lab, sources: list[str]) -> None:
    """A counting rule per source in mangle PREROUTING: what conntrack saw as NEW."""
    for src in sources:
        tool = f"ip6tables-{lab.backend}" if ":" in src else f"iptables-{lab.backend}"
        lab.server.run(tool, "-t", "mangle", "-A", "PREROUTING", "-s", src, "-p", "udp",
                       "--dport", "5060", "-m", "conntrack", "--ctstate", "NEW")


def counters(lab: Lab, family: int) -> list[tuple[str, str, int]]:
    """(chain, spec, packets) of every rule in raw, mangle and filter."""
    tool = f"ip6tables-{lab.backend}-save" if family == 6 else f"iptables-{lab.backend}-save"
    out = []
    for line in lab.server.run(tool, "-c").stdout.splitlines():
        found = COUNTED.match(line)
        if found:
            out.append((found[2], found[3], int(found[1])))
    return out


def packets(rules: list[tuple[str, str, int]], chain: str, *needles: str) -> int:
    hits = [n for c, spec, n in rules if c == chain and all(s in spec for s in needles)]
    assert hits, (chain, needles, rules)
    return sum(hits)


def tracked(lab: Lab, src: str) -> int:
    family = ["-f", "ipv6"] if ":" in src else []
    listed = lab.server.run("conntrack", "-L", *family, "-s", src, "-p", "udp", check=False)
    return sum(1 for line in listed.stdout.splitlines() if line.strip())


def ban(lab: Lab, config: object, sources: list[str]) -> None:
    lab.server.python(
        "from floodguard.config import load; from floodguard.kernel.rules import render; "
        "from floodguard.kernel.ipset import SetManager; "
        f"m = SetManager(render(load('{config}')).sets); "
        f"[m.add('ban', ip, 300) for ip in {sources!r}]")


def test_ban_and_per_source_floods_die_in_raw_before_conntrack(lab: Lab) -> None:
    config = lab.config()
    lab.apply(config)
    banned, over = [CLIENTS4[BANNED], CLIENTS6[BANNED]], [CLIENTS4[OVER], CLIENTS6[OVER]]
    ban(lab, config, banned)
    probe(lab, banned + over)
    for src in banned + over:
        flood(lab, src, COUNT)
    for family, (bad, loud) in ((4, (banned[0], over[0])), (6, (banned[1], over[1]))):
        rules = counters(lab, family)
        ban_set = "floodguard-ban" if family == 4 else "floodguard-ban-net6"
        # the banned flood: all of it dropped by the ban set, the first test after the allow set
        assert packets(rules, "FLOODGUARD-RAW", "--dport 5060", ban_set, "DROP") == COUNT
        assert packets(rules, "PREROUTING", f"-s {bad}") == 0  # conntrack never saw it
        assert tracked(lab, bad) == 0
        # the flood over the per-source REGISTER limit: dropped by it, in raw
        dropped = packets(rules, "FLOODGUARD-LIMIT", "fg-reg-", "DROP")
        survived = COUNT - dropped
        assert 10 <= survived <= 10 + SLACK, (family, survived)
        assert packets(rules, "FLOODGUARD-LIMIT", "fg-sip-") == 0
        assert packets(rules, "FLOODGUARD-LIMIT", "fg-bud-") == 0
        # only the survivors reached conntrack, the filter chains and the scanner search
        assert packets(rules, "PREROUTING", f"-s {loud}") == survived
        assert packets(rules, "FLOODGUARD", "--dport 5060 -j FLOODGUARD-SIP") == survived
        assert packets(rules, "FLOODGUARD-SIP", '"friendly-scanner"', "DROP") == survived
        assert packets(rules, "FLOODGUARD-SIP", "NFQUEUE") == 0
        # dropped in filter before conntrack confirmed them: no entry stays behind either
        assert tracked(lab, loud) == 0


def test_spoofed_spread_is_cut_by_the_budget_before_conntrack(lab: Lab) -> None:
    # Three unknown sources, each under its per-source limits (OPTIONS: no REGISTER limit; 45 in
    # the SIP burst of 50): only the global budget (20/s, burst 20) can drop their sum.
    config = lab.config('[limits]\nqueue_budget = 20\n[admission]\nmode = "static"\n')
    lab.apply(config)
    sources = [CLIENTS4[BANNED], CLIENTS4[OVER], CLIENTS4[OTHER]]
    probe(lab, sources)
    flood(lab, sources, 45, kind="options")
    rules = counters(lab, 4)
    assert packets(rules, "FLOODGUARD-LIMIT", "fg-reg-") == 0
    assert packets(rules, "FLOODGUARD-LIMIT", "fg-sip-") == 0
    dropped = packets(rules, "FLOODGUARD-LIMIT", "fg-bud-", "DROP")
    survived = 3 * 45 - dropped
    assert 20 <= survived <= 20 + 2 * SLACK, survived
    assert sum(packets(rules, "PREROUTING", f"-s {src}") for src in sources) == survived
    assert packets(rules, "FLOODGUARD-SIP", '"friendly-scanner"', "DROP") == survived


def test_monitor_mode_counts_in_raw_and_drops_nothing(lab: Lab) -> None:
    config = lab.config('[guard]\nmode = "monitor"\n')
    lab.apply(config)
    src = CLIENTS4[OVER]
    probe(lab, [src])
    sink = lab.start_sink()
    flood(lab, src, 60, kind="options")  # scanner user agent: counted, not dropped
    got = lab.stop_sink(sink)
    rules = counters(lab, 4)
    assert got[src]["OPTIONS"] == 60
    assert 8 <= packets(rules, "FLOODGUARD-LIMIT", "fg-sip-") <= 10  # over the burst of 50
    assert packets(rules, "PREROUTING", f"-s {src}") == 60
    assert packets(rules, "FLOODGUARD-SIP", '"friendly-scanner"') == 60


def test_sip_the_host_only_routes_is_not_limited_in_local_mode(lab: Lab) -> None:
    """raw PREROUTING sees routed packets too (the filter INPUT rules never did): in local mode
    a flood through this host to another one meets no limit of floodguard's; to this host it
    does."""
    lab.apply(lab.config())
    lab.server.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
    # a link towards "other hosts" (a veth pair that ends in this namespace too)
    lab.server.run("ip", "link", "add", "fgfar", "type", "veth", "peer", "name", "fgfar2")
    for link in ("fgfar", "fgfar2"):
        lab.server.run("ip", "link", "set", link, "up")
    lab.server.run("ip", "route", "add", "10.251.0.0/24", "dev", "fgfar")
    lab.client.run("ip", "route", "add", "10.251.0.0/24", "via", SERVER4)
    src = CLIENTS4[OVER]
    lab.client.run(sys.executable, "-c", FLOOD, src, "10.251.0.9", str(COUNT), "register")
    rules = counters(lab, 4)
    assert packets(rules, "FLOODGUARD-RAW", "--dst-type LOCAL", "RETURN") == COUNT
    assert packets(rules, "FLOODGUARD-LIMIT", "fg-reg-") == 0
    flood(lab, src, COUNT)
    assert packets(counters(lab, 4), "FLOODGUARD-LIMIT", "fg-reg-", "DROP") >= COUNT - 10 - SLACK
