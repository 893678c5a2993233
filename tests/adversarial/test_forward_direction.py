"""Attack: forged "responses" through a forward-mode guard (issue 13, item 3).

With ``mode = "forward"`` the guard took any reply-looking packet with ports 5060 -> 5060 for
the registrar's own output. From outside, an attacker forged a 401 "to" the registrar, a
REGISTER spoofing the registrar's address, then a 403: six rounds got the registrar itself
suspended, after which its replies to the phones were dropped. Now a packet is the registrar's
output only when it really arrives from the registrar's side (``sip.registrar_interfaces``: the
rules mark it there and the queue binding reports it as leaving); ports decide nothing.

Three namespaces: phones and the attacker outside, floodguard forwarding in the middle (reverse
path filtering off, the worst case for spoofing), Kamailio or floodguard's registrar inside.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial.counterkit import published_verdicts
from tests.integration.conftest import SERVER4
from tests.integration.guardkit import GuardLab

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save",
                              "kamailio", "sipp")

OUTSIDE_GW, PHONE, ATTACKER = "10.251.0.1", "10.251.0.2", "10.251.0.3"
INSIDE_GW = "10.250.0.254"

FORGE = r'''
import sys, time
from scapy.all import IP, UDP, send
registrar, attacker, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
def sip(lines):
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
for i in range(rounds):
    cid = "forged-%d" % i
    common = ["Via: SIP/2.0/UDP %s:5060;branch=z9hG4bKf%d" % (registrar, i),
              "From: <sip:1001@%s>;tag=f%d" % (registrar, i), "To: <sip:1001@%s>" % registrar,
              "Call-ID: " + cid]
    challenge = sip(["SIP/2.0 401 Unauthorized"] + common + [
        "CSeq: 1 REGISTER", 'WWW-Authenticate: Digest realm="r", nonce="K%d"' % i])
    register = sip(["REGISTER sip:%s SIP/2.0" % registrar] + common + [
        "CSeq: 2 REGISTER", 'Authorization: Digest username="1001", realm="r", '
        'nonce="K%d", uri="sip:%s", response="%032x"' % (i, registrar, i)])
    forbidden = sip(["SIP/2.0 403 Forbidden"] + common + ["CSeq: 2 REGISTER"])
    for src, payload in ((attacker, challenge), (registrar, register), (attacker, forbidden)):
        send(IP(src=src, dst=registrar) / UDP(sport=5060, dport=5060) / payload, verbose=False)
        time.sleep(0.05)
'''


def _topology(make_netns: Any, tmp_path: Path) -> tuple[GuardLab, GuardLab]:
    """(the router's lab: guard and rules; the registrar's lab: Kamailio on SERVER4)."""
    outside, router, inside = make_netns("fout"), make_netns("frtr"), make_netns("fin")
    tag = router.name.split("-")[1]
    out_r, out_c, in_r, in_g = f"fo{tag}r", f"fo{tag}c", f"fi{tag}r", f"fi{tag}g"
    router.run("ip", "link", "add", out_r, "type", "veth", "peer", "name", out_c,
               "netns", outside.name)
    router.run("ip", "link", "add", in_r, "type", "veth", "peer", "name", in_g,
               "netns", inside.name)
    router.run("ip", "addr", "add", f"{OUTSIDE_GW}/24", "dev", out_r)
    router.run("ip", "addr", "add", f"{INSIDE_GW}/24", "dev", in_r)
    for link in (out_r, in_r):
        router.run("ip", "link", "set", link, "up")
    for key in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                f"net.ipv4.conf.{out_r}.rp_filter=0"):
        router.run("sysctl", "-qw", key)
    for address in (PHONE, ATTACKER):
        outside.run("ip", "addr", "add", f"{address}/24", "dev", out_c)
    outside.run("ip", "link", "set", out_c, "up")
    outside.run("ip", "route", "add", "default", "via", OUTSIDE_GW)
    inside.run("ip", "addr", "add", f"{SERVER4}/24", "dev", in_g)
    inside.run("ip", "link", "set", in_g, "up")
    inside.run("ip", "route", "add", "default", "via", INSIDE_GW)
    guard = GuardLab(router, outside, tmp_path)
    path = guard.write_config('[scanner]\nuser_agents = []\n')
    path.write_text(path.read_text().replace(
        "[sip]\n", f'[sip]\nmode = "forward"\nregistrar_interfaces = ["{in_r}"]\n', 1))
    (tmp_path / "registrar").mkdir()
    registrar = GuardLab(inside, outside, tmp_path / "registrar")
    return guard, registrar


@pytest.mark.parametrize("kind", ["kamailio", "floodguard"])
def test_forged_responses_from_outside_never_count(make_netns: Any, tmp_path: Path,
                                                   kind: str) -> None:
    guard, registrar = _topology(make_netns, tmp_path)
    guard.apply()
    if kind == "kamailio":
        registrar.start_kamailio()
    else:
        registrar.write_config()
        registrar.start_registrar()
    guard.start_guard()
    try:
        before = guard.sipp_register(PHONE, [("1002", "secret1002")], calls=2, rate=2,
                                     port=5071)
        assert before["successful"] == 2 and before["failed"] == 0
        guard.client.run(sys.executable, "-c", FORGE, SERVER4, ATTACKER, "8")
        time.sleep(1.5)
        assert SERVER4 not in guard.ban_set()
        assert not [e for e in guard.events() if e["event"] in ("suspend", "ban")], \
            guard.events()
        # the registrar's real answers crossed the guard as its output: it learned from them
        after = guard.sipp_register(PHONE, [("1002", "secret1002")], calls=2, rate=2,
                                    port=5072)
        assert after["successful"] == 2 and after["failed"] == 0
        assert PHONE not in guard.ban_set()
        verdicts = published_verdicts(tmp_path / "state.db")
        # the 16 forged "responses" were read as arriving from outside, never as the
        # registrar's; the registrar's real answers (2 per registration) as its output
        assert verdicts.get("pass:response-in", 0) >= 16, verdicts
        assert verdicts.get("pass:response-out", 0) >= 8, verdicts
        # the kernel learned the phone's challenges from the registrar's side alone: each of
        # its 4 answers took the token class once; the forged 401s put nobody in the set
        raw = guard.server.run("iptables-nft-save", "-c", "-t", "raw").stdout
        used = [line for line in raw.splitlines() if "-A FLOODGUARD-ANSWER" in line]
        assert used and int(used[0][1:].split(":")[0]) >= 4, raw
        assert guard.server.run("ipset", "test", "floodguard-challenged", SERVER4,
                                check=False).returncode != 0
    finally:
        guard.stop_guard()
        registrar.stop_kamailio()
