"""Coexistence with the host's firewall (README "Coexistence with the host's firewall"), on
the real kernel in a namespace with Kamailio and the guard running: what a firewall service or
an operator does to the ruleset (``nft flush ruleset``, ``iptables -F``/``-X``, ``ipset destroy``)
is undone by the guard's rule keeper within 10 s, bans included (reloaded from the state store);
the keeper follows the last ``floodguard apply`` / ``remove``, not what the kernel held when the
guard started."""

from __future__ import annotations

import time

import pytest

from floodguard.rulekeeper import CHECK_EVERY

from .conftest import CLIENTS4
from .guardkit import GuardLab, start

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft", "ip6tables-nft", "iptables-legacy",
                              "ip6tables-legacy", "nft", "kamailio")

ATTACKER = CLIENTS4[0]
BACK_WITHIN = 10.0  # seconds, the promise


def fg(lab: GuardLab, *args: str) -> str:
    assert lab.config_path is not None
    return lab.server.floodguard(*args, "-c", str(lab.config_path)).stdout


def intact(lab: GuardLab, backend: str = "nft") -> bool:
    """Our jumps, chains and rules in both families and tables, and the ban in its set."""
    run = lab.server.run
    for tool in (f"iptables-{backend}", f"ip6tables-{backend}"):
        raw = run(tool, "-t", "raw", "-S", "PREROUTING", check=False).stdout
        sip = run(tool, "-S", "FLOODGUARD-SIP", check=False).stdout
        if "-j FLOODGUARD-RAW" not in raw or "NFQUEUE" not in sip:
            return False
    if run("ipset", "list", "-n", check=False).stdout.split().count("floodguard-ban") != 1:
        return False
    return ATTACKER in lab.ban_set()


def back_after(lab: GuardLab, command: str, backend: str = "nft") -> float:
    """Seconds until everything is back after ``command`` (in the server namespace)."""
    lab.server.sh(command)
    started = time.monotonic()
    assert not intact(lab, backend), f"{command} took nothing away"
    while time.monotonic() - started < BACK_WITHIN + 5:
        if intact(lab, backend):
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"not back {BACK_WITHIN + 5} s after {command}:\n"
                         + lab.server.run(f"iptables-{backend}-save").stdout)


def test_flushed_rules_sets_and_bans_come_back_within_10_s(glab: GuardLab) -> None:
    start(glab)
    fg(glab, "blacklist", "add", ATTACKER, "--ttl", "600")
    assert intact(glab)
    # nftables.service's `flush ruleset` takes every table (iptables-nft's too); with nothing
    # referring to them, a firewall script may then destroy every ipset as well
    took = back_after(glab, "nft flush ruleset && ipset destroy")
    assert took < BACK_WITHIN
    assert 500 < glab.ban_set()[ATTACKER] <= 600  # its remaining time, from the store
    def repaired() -> list[dict]:
        return [e for e in glab.events() if e["event"] == "rules_repaired"]

    deadline = time.monotonic() + 5
    while not repaired() and time.monotonic() < deadline:
        time.sleep(0.1)
    last = repaired()[-1]
    assert last["restored"] >= 1 and "floodguard-ban" in last["sets"]
    assert {"floodguard-challenged", "floodguard-challenged-v6"} <= set(last["sets"])

    # iptables -F and -X in every table both families use
    took_again = back_after(glab, "for t in iptables ip6tables; do for table in raw filter; do "
                                  "$t -t $table -F && $t -t $table -X; done; done")
    assert took_again < BACK_WITHIN
    print(f"back after {took:.1f} s (nft flush + ipset destroy), "
          f"{took_again:.1f} s (iptables -F -X)")


def test_keeper_follows_apply_and_remove_not_the_start(glab: GuardLab) -> None:
    """A guard started before the rules were applied repairs them once they are; after
    ``floodguard remove`` it leaves them out."""
    glab.write_config('[scanner]\nuser_agents = []\n')
    glab.start_kamailio()
    glab.start_guard()
    time.sleep(CHECK_EVERY + 1)
    assert "FLOODGUARD" not in glab.server.run("iptables-save").stdout  # never installs
    glab.apply()
    fg(glab, "blacklist", "add", ATTACKER, "--ttl", "600")
    assert back_after(glab, "nft flush ruleset") < BACK_WITHIN
    fg(glab, "remove")
    # remove has recorded it when it returns: every check from then on, the next one within
    # CHECK_EVERY, must leave the rules out
    time.sleep(CHECK_EVERY + 1)
    assert "FLOODGUARD" not in glab.server.run("iptables-save").stdout
    assert "floodguard" not in glab.server.run("ipset", "list", "-n").stdout
    assert [e["event"] for e in glab.events() if e["event"].startswith("rules_")] \
        == ["rules_repaired"]  # the flush's, and nothing after the remove


def test_legacy_tables_flushed_and_sets_destroyed_come_back_too(glab: GuardLab) -> None:
    """The same with the legacy backend (iptables-legacy, which nft never sees)."""
    glab.write_config('[scanner]\nuser_agents = []\n')
    glab.server.floodguard("apply", "-c", str(glab.config_path), "--backend", "legacy")
    glab.start_kamailio()
    glab.start_guard()
    fg(glab, "blacklist", "add", ATTACKER, "--ttl", "600")
    assert intact(glab, "legacy")
    took = back_after(glab, "for t in iptables-legacy ip6tables-legacy; do for table in raw filter;"
                            " do $t -t $table -F && $t -t $table -X; done; done && ipset destroy",
                      "legacy")
    assert took < BACK_WITHIN
    assert 500 < glab.ban_set()[ATTACKER] <= 600
    assert "FLOODGUARD" not in glab.server.run("iptables-nft-save").stdout  # never mixed
