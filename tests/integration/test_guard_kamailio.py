"""The guard on a real NFQUEUE in front of Kamailio: svcrack is banned, phones keep registering,
spoofed framing never bans, bans survive a guard restart, and fail-open keeps SIP flowing."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from .conftest import CLIENTS4, SERVER4
from .guardkit import GuardLab, start, svcrack

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save",
                              "kamailio", "sipp", "svcrack")

UDPSEND = Path(__file__).with_name("udpsend.py")

ATTACKER, PHONE, NAT, SPOOFED = CLIENTS4


def test_svcrack_is_banned_and_phones_keep_registering(glab: GuardLab) -> None:
    start(glab)
    svcrack(glab, ATTACKER)
    bans = glab.ban_set()
    assert ATTACKER in bans, glab.events()
    assert 0 < bans[ATTACKER] <= 180
    ban_events = [e for e in glab.events() if e["event"] in ("suspend", "ban")]
    assert ban_events[0]["ip"] == ATTACKER and ban_events[0]["failures"] <= 6
    # further packets from the attacker die in the kernel, before the queue
    before = glab.server.run("ipset", "list", "floodguard-ban").stdout
    assert ATTACKER in before
    svcrack(glab, ATTACKER, tries=5)
    counters = glab.server.floodguard("show", "--json", "-c", str(glab.config_path))
    assert '"DROP"' in counters.stdout or "DROP" in counters.stdout
    # a legitimate phone on another address registers fine
    result = glab.sipp_register(PHONE, [("1002", "secret1002")], calls=5, rate=2, port=5071)
    assert result["successful"] == 5 and result["failed"] == 0
    assert PHONE not in glab.ban_set()
    # `floodguard explain` tells both apart, from the store, the guard's saved state and the
    # kernel (the guard saves its state every few seconds: wait for the phone's success)
    attacker = explain(glab, ATTACKER)
    assert attacker["ban"]["ip"] == ATTACKER and attacker["in_kernel_ban_set"] is True
    assert attacker["verdict"].startswith(("suspended", "banned")), attacker
    assert attacker["history"][0]["op"] == "ban" and not attacker["history"][0]["ended"]
    account = explain(glab, "1001")
    assert ATTACKER in [b["ip"] for b in account["bans"]], account
    deadline = time.monotonic() + 15
    phone = explain(glab, PHONE)
    while phone["known_good"] is None and time.monotonic() < deadline:
        time.sleep(0.5)
        phone = explain(glab, PHONE)
    assert phone["known_good"] is not None and phone["ban"] is None, phone
    assert phone["verdict"] == "can register" and phone["guard"]["snapshots"]
    register = [b for b in phone["kernel_limits"] if b["purpose"] == "REGISTER per source"]
    assert len(register) == 1 and not register[0]["limited"]


def explain(glab: GuardLab, target: str) -> dict:
    out = glab.server.floodguard("explain", target, "--json", "-c", str(glab.config_path))
    return json.loads(out.stdout)


def test_spoofed_bogus_nonces_never_ban_the_victim(glab: GuardLab) -> None:
    start(glab)
    # the victim registers for real, then an attacker floods bogus-nonce REGISTERs in its name
    assert glab.sipp_register(PHONE, [("1002", "secret1002")], calls=1, rate=1,
                              port=5072)["successful"] == 1
    out = glab.client.run(sys.executable, str(UDPSEND), "--src", PHONE, "--sport", "5099",
                          "--dst", SERVER4, "--kind", "bogus-auth", "--count", "60",
                          "--interval", "0.1").stdout
    assert json.loads(out)["sent"] == 60
    time.sleep(1)
    assert PHONE not in glab.ban_set()
    assert not [e for e in glab.events() if e["event"] in ("suspend", "ban")]


def test_call_centre_storm_from_one_nat_address_suspends_nobody(glab: GuardLab) -> None:
    # 10 accounts behind one NAT address re-registering at once, 50 registrations in all; a
    # gateway entry gives the NAT its own budget instead of one phone's
    start(glab, f'[[gateway]]\nname = "callcentre"\nsources = ["{NAT}/32"]\ncps = 200\n')
    users = [(str(u), f"secret{u}") for u in range(1001, 1011)]
    result = glab.sipp_register(NAT, users, calls=50, rate=50, port=5073)
    assert result["failed"] == 0 and result["successful"] == 50
    assert NAT not in glab.ban_set()
    assert not [e for e in glab.events() if e["event"] in ("suspend", "ban")]


def test_ban_survives_guard_restart_with_remaining_time(glab: GuardLab) -> None:
    start(glab)
    svcrack(glab, ATTACKER)
    first = glab.ban_set()[ATTACKER]
    assert glab.stop_guard() == 0
    # gone from the kernel (e.g. a reboot flushed the sets), the store brings it back
    glab.server.run("ipset", "flush", "floodguard-ban")
    time.sleep(2)
    glab.start_guard()
    restored = glab.ban_set()
    assert ATTACKER in restored
    assert first - 10 <= restored[ATTACKER] <= first - 1
    explain = glab.server.floodguard("blacklist", "explain", ATTACKER, "-c", str(glab.config_path))
    assert "suspended" in explain.stdout and "consecutive failed registrations" in explain.stdout


def test_fail_open_kernel_limits_hold_when_the_guard_dies(glab: GuardLab) -> None:
    start(glab)
    assert glab.guard is not None
    workers = glab.server.run("pgrep", "-P", str(glab.guard.pid)).stdout.split()
    assert workers
    glab.guard.kill()  # SIGKILL the supervisor and its workers: nothing drains the queue
    for pid in workers:
        glab.server.run("kill", "-9", pid, check=False)
    time.sleep(0.5)
    # phones still register through the queue's bypass
    result = glab.sipp_register(PHONE, [("1002", "secret1002")], calls=3, rate=1, port=5074)
    assert result["successful"] == 3
    # and a flood is still cut by the kernel's per-source REGISTER limit
    out = json.loads(glab.client.run(
        sys.executable, str(UDPSEND), "--src", ATTACKER, "--sport", "5098", "--dst", SERVER4,
        "--kind", "register", "--seconds", "3", "--interval", "0.002").stdout)
    assert out["sent"] > 500
    assert out["answered"] <= 5 * 3 + 10 + 5, out


def test_registration_over_tcp_passes_the_guard_and_teaches_it(glab: GuardLab) -> None:
    start(glab)
    result = glab.sipp_register(PHONE, [("1004", "secret1004")], calls=4, rate=2, port=5076,
                                transport="t1")
    assert result["successful"] == 4 and result["failed"] == 0
    known = glab.server.run("ipset", "list", "floodguard-known").stdout
    assert PHONE in known  # the guard read the 200 OK on the TCP stream
    assert not [e for e in glab.events() if e["event"] in ("suspend", "ban")]


SPLIT_CLIENT = """
import socket, sys, time
src, dst = sys.argv[1], sys.argv[2]
msg = ("REGISTER sip:%s SIP/2.0\\r\\nVia: SIP/2.0/TCP %s:5090;branch=z9hG4bKsplit\\r\\n"
       "From: <sip:1005@%s>;tag=s1\\r\\nTo: <sip:1005@%s>\\r\\nCall-ID: split-1\\r\\n"
       "CSeq: 1 REGISTER\\r\\nMax-Forwards: 70\\r\\nContact: <sip:1005@%s:5090;transport=tcp>\\r\\n"
       "Content-Length: 0\\r\\n\\r\\n") % (dst, src, dst, dst, src)
s = socket.create_connection((dst, 5060), source_address=(src, 0), timeout=5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
data = msg.encode()
s.sendall(data[:70]); time.sleep(0.3)
s.sendall(data[70:140]); time.sleep(0.3)
s.sendall(data[140:])
print(s.recv(4096).split(b"\\r\\n")[0].decode())
"""


def test_message_split_across_tcp_segments_is_answered_and_never_a_failure(
        glab: GuardLab) -> None:
    start(glab)
    out = glab.client.run(sys.executable, "-c", SPLIT_CLIENT, PHONE, SERVER4).stdout
    assert out.strip() == "SIP/2.0 401 Unauthorized"
    partial = [e for e in glab.events() if e["event"] in ("suspend", "ban")]
    assert not partial
    assert glab.guard is not None and glab.guard.poll() is None
