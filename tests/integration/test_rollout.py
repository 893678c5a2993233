"""Rolling out safely (README "Roll out safely"), on the real stack: kernel rules applied in a
namespace, Kamailio, the guard, SIPp/svcrack attacks and a feed over HTTP.

Monitor mode first: the attacks give ``would_*`` events, nothing is banned, the kernel's limit
rules count (their counters move) and drop nothing. Then the config says enforce,
``floodguard apply`` and SIGHUP: the next attack is banned and the kernel limits drop.
``run --monitor`` on a file that says enforce quiets the guard, the feeds and never the kernel:
the rule keeper keeps (and repairs) the rules the file says.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest

from floodguard.status import LIMIT_CHAINS

from .conftest import CLIENTS4, SERVER4
from .guardkit import GuardLab, start, svcrack

pytestmark = pytest.mark.root("ip", "ipset", "iptables", "kamailio", "svcrack", "conntrack")

UDPSEND = Path(__file__).with_name("udpsend.py")
ATTACKER, PHONE, LATER, LISTED = CLIENTS4
FLOOD = 300  # REGISTERs from one source in 0.3 s: the limit (5/s, burst 10) lets ~12 through


def fg(lab: GuardLab, *args: str) -> str:
    assert lab.config_path is not None
    return lab.server.floodguard(*args, "-c", str(lab.config_path)).stdout


def wait_for(predicate, seconds: float) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def flood(lab: GuardLab, sport: int) -> None:
    out = json.loads(lab.client.run(
        sys.executable, str(UDPSEND), "--src", PHONE, "--sport", str(sport), "--dst", SERVER4,
        "--kind", "register", "--count", str(FLOOD), "--interval", "0.001").stdout)
    assert out["sent"] == FLOOD


def kernel(lab: GuardLab) -> dict[str, int]:
    """Packets the register-rate limit caught (dropped, or counted in monitor mode), packets
    it dropped for real, and packets queued to the guard, from the rules' counters."""
    rules = json.loads(fg(lab, "show", "--json"))["rules"]
    caught = sum(r["packets"] for r in rules if "fg-reg-" in r["rule"])
    dropped = sum(r["packets"] for r in rules if "fg-reg-" in r["rule"]
                  and r["rule"].endswith("-j DROP"))
    queued = sum(r["packets"] for r in rules
                 if "NFQUEUE" in r["rule"] and r["chain"] != "FLOODGUARD-OUT")
    return {"caught": caught, "dropped": dropped, "queued": queued}


def named(lab: GuardLab, *names: str) -> list[dict]:
    return [e for e in lab.events() if e["event"] in names]


def test_monitor_then_enforce_on_the_real_stack(glab: GuardLab) -> None:
    feed = glab.tmp / "list.txt"
    feed.write_text(f"{LISTED}\n")
    web = glab.server.popen(sys.executable, "-m", "http.server", "8090", "--bind", "127.0.0.1",
                            "--directory", str(glab.tmp))
    rest = ('[[feed]]\nname = "community"\nsource = "http://127.0.0.1:8090/list.txt"\n'
            'interval = 2\nban_time = 600\n')
    start(glab, '[guard]\nmode = "monitor"\n' + rest)
    assert web.poll() is None
    assert {e["mode"] for e in named(glab, "guard_started")} == {"monitor"}
    rules = json.loads(fg(glab, "show", "--json"))["rules"]
    assert not [r for r in rules if r["chain"] in LIMIT_CHAINS and r["rule"].endswith("DROP")]

    # monitor: the attacks are seen and reported, never stopped
    before = kernel(glab)
    flood(glab, 5091)
    svcrack(glab, ATTACKER, tries=12)
    after = kernel(glab)
    assert after["caught"] - before["caught"] >= FLOOD - 20  # the limit counts what it would drop
    assert after["dropped"] == 0  # and drops nothing: every REGISTER went on to the guard
    assert after["queued"] - before["queued"] >= FLOOD
    would = [e for e in named(glab, "would_suspend", "would_ban") if "by" not in e]  # guard's
    assert would and would[0]["ip"] == ATTACKER and would[0]["failures"] == 6, would
    assert wait_for(lambda: any(e["ip"] == LISTED and e.get("by") == "feed"
                                for e in named(glab, "would_ban")), 10)
    imported = named(glab, "feed_imported")[0]
    assert imported["monitor"] is True and imported["would_ban"] == 1 and imported["banned"] == 0
    assert not named(glab, "ban", "suspend", "bans")
    assert glab.ban_set() == {}

    # enforce: the file says so, the rules unit applies it, the guard reloads
    assert glab.config_path is not None
    text = glab.config_path.read_text()
    glab.config_path.write_text(text.replace('mode = "monitor"', 'mode = "enforce"'))
    assert 'mode = "enforce"' in glab.config_path.read_text()
    glab.apply()
    assert glab.guard is not None
    glab.guard.send_signal(signal.SIGHUP)
    assert wait_for(lambda: len(named(glab, "reload")) >= 1, 10)
    before = kernel(glab)
    flood(glab, 5092)
    after = kernel(glab)
    assert after["dropped"] - before["dropped"] >= FLOOD - 20  # the kernel limit drops now
    assert after["queued"] - before["queued"] <= 20
    svcrack(glab, LATER, tries=12)
    assert wait_for(lambda: LATER in glab.ban_set() and LISTED in glab.ban_set(), 10), \
        glab.ban_set()
    assert any(e["ip"] == LATER for e in named(glab, "suspend", "ban"))
    assert any(e["ip"] == LISTED and e["by"] == "feed" for e in named(glab, "ban"))
    assert not named(glab, "monitor_override", "rules_repaired")


def test_run_monitor_never_rewrites_the_kernel_rules(glab: GuardLab) -> None:
    """``run --monitor`` on a file that says enforce: the guard and the feed only log, the
    guard says the kernel still enforces, and the rule keeper repairs a flush with the file's
    (dropping) rules, which stay when the guard stops."""
    feed = glab.tmp / "list.txt"
    feed.write_text(f"{LISTED}\n")
    start_args = ('[[feed]]\nname = "community"\nsource = "' + str(feed) + '"\n'
                  'interval = 2\nban_time = 600\n')
    glab.write_config('[scanner]\nuser_agents = []\n' + start_args)
    glab.apply()
    glab.start_kamailio()
    glab.start_guard("--monitor")
    override = named(glab, "monitor_override")
    assert override and override[0]["rules"] == "enforce" and override[0]["guard"] == "monitor"
    assert {e["mode"] for e in named(glab, "guard_started")} == {"monitor"}
    svcrack(glab, ATTACKER, tries=12)
    assert named(glab, "would_suspend", "would_ban")
    assert wait_for(lambda: bool(named(glab, "feed_imported")), 10)
    assert glab.ban_set() == {}
    glab.server.run("iptables", "-t", "raw", "-F", "FLOODGUARD-LIMIT")
    assert wait_for(lambda: bool(named(glab, "rules_repaired")), 10)
    limits = glab.server.run("iptables", "-t", "raw", "-S", "FLOODGUARD-LIMIT").stdout
    assert "fg-reg-" in limits and "-j DROP" in limits, limits
    assert glab.stop_guard() == 0
    limits = glab.server.run("iptables", "-t", "raw", "-S", "FLOODGUARD-LIMIT").stdout
    assert [ln for ln in limits.splitlines() if "fg-reg-" in ln and ln.endswith("-j DROP")]
