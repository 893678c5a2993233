"""The guard on a real NFQUEUE in front of Kamailio: svcrack is banned, phones keep registering,
spoofed framing never bans, bans survive a guard restart, and fail-open keeps SIP flowing."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .conftest import CLIENTS4, SERVER4
from .guardkit import GuardLab, start, svcrack

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
