"""Attack: a stale-password phone behind an office NAT (issue #16, items 1, 2, 6).

Before, the stale phone's 6th proven failure suspended the whole address for 180 s and its
repeat became a 1-hour ban: every phone of the office was off the air. Now the address holds
known-good (source, AOR) pairs (its phones registered), so only the failing endpoint — that
AOR from that address — is suspended: the guard drops its REGISTERs unanswered, the phones
keep registering, the address never enters the kernel's ban set, and the stale phone gets at
most ``register_retry`` (6) wrong-password answers per suspension period.

The real stack in namespaces: kernel rules, the guard, floodguard's own registrar or Kamailio
(accounts 1001..1010 on both), 9 phones and the stale one on one source address. The per-source
kernel limits are raised for the office address's 10 phones (in production a NAT gateway's
address is a ``[[gateway]]``, shared-capable from the start; here it must earn it by its
phones' registrations) and ``suspend_time`` is 4 s so a short run sees several periods.

The lockdown also runs over IPv6, where an office has no NAT: the phones, the stale phone and the
guesser each have their own address of one /64, which is one source (``limits.ipv6_prefix``).
The kernel locks down the /64 and passes each phone's own (address, UDP port).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from floodguard.store import Store
from tests.integration.conftest import CLIENTS4, SERVER4, SERVER6
from tests.integration.guardkit import GuardLab, start

pytestmark = pytest.mark.root("ip", "ipset", "iptables", "ip6tables", "iptables-nft-save",
                              "iptables-legacy-save", "kamailio")

OFFICE = Path(__file__).with_name("office.py")
ROOT = Path(__file__).resolve().parents[2]
NAT = CLIENTS4[2]
PHONES = [str(u) for u in range(1001, 1010)]
STALE = "1010"
RETRY = 6
SUSPEND = 4
# an IPv6 office: one /64, every phone on its own address of it
OFFICE6 = "fd00:fa:0:7::"
PHONES6 = [f"{OFFICE6}{user}" for user in PHONES]
STALE6 = f"{OFFICE6}{STALE}"
GUESSER6 = f"{OFFICE6}bad"
CONFIG = ("[limits]\nregister_rate = 50\nregister_burst = 100\nsip_rate = 100\n"
          f"sip_burst = 200\n[suspension]\nregister_retry = {RETRY}\n"
          f"suspend_time = {SUSPEND}\n")


def runs(stale: list[list[float | int | None]]) -> list[int]:
    """Wrong-password answers in each run of answered requests (a silence ends a run: the
    endpoint is suspended)."""
    out = [0]
    for _, status in stale:
        if status is None:
            if out[-1]:
                out.append(0)
        elif status in (401, 403):
            out[-1] += 1
    return [n for n in out if n]


@pytest.mark.parametrize("registrar", ["floodguard", "kamailio"])
def test_the_stale_phone_is_suspended_alone_and_the_office_keeps_registering(
        glab: GuardLab, registrar: str) -> None:
    start(glab, CONFIG, registrar=registrar)
    out = glab.client.run(
        sys.executable, str(OFFICE), "--src", NAT, "--server", SERVER4,
        "--phones", ",".join(PHONES), "--stale", STALE, "--duration", "12",
        env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    result = json.loads(out)
    phones, stale = result["phones"], result["stale"]
    events = glab.events()
    suspends = [e for e in events if e["event"] == "suspend"]
    # the office kept registering, every time
    assert phones["failed"] == 0 and phones["ok"] >= 2 * len(PHONES), (phones, suspends)
    # only the stale phone's endpoint was suspended, never the address
    assert suspends, (stale, events)
    assert {(e["ip"], e["aor"].split("@")[0], e.get("scope")) for e in suspends} == {
        (NAT, STALE, "aor")}, suspends
    assert NAT not in glab.ban_set()
    assert not [e for e in events if e["event"] == "ban"], events
    # at most register_retry wrong-password answers per suspension period, over several
    periods = runs(stale)
    assert len(periods) >= 2 and max(periods) <= RETRY, (periods, stale)
    assert sum(periods) <= RETRY * (len(suspends) + 1), (periods, suspends)
    # its REGISTERs were dropped unanswered while suspended, and a suspension ended on time
    assert any(status is None for _, status in stale), stale
    ends = [e for e in events if e["event"] == "suspend_end"]
    assert ends and ends[0]["reason"] == "expired" and ends[0]["ip"] == NAT, events
    # the known-good pairs are in the store
    store = Store(glab.tmp / "state.db", recover=False)
    try:
        pairs = {aor.split("@")[0] for ip, aor, _ in store.active_known_pairs() if ip == NAT}
    finally:
        store.close()
    assert pairs >= set(PHONES), pairs
    # and `floodguard explain` tells the story, for the address and for the account
    assert glab.config_path is not None
    source = json.loads(glab.server.floodguard(
        "explain", "-c", str(glab.config_path), "--json", NAT).stdout)
    assert source["shared_capable"] is True and source["ban"] is None, source
    assert {p["aor"].split("@")[0] for p in source["known_pairs"]} >= set(PHONES), source
    told = source["endpoint_suspensions"] + [h for h in source["history"]
                                             if h.get("scope") == "aor"]
    assert told and {t["aor"].split("@")[0] for t in told} == {STALE}, told
    account = json.loads(glab.server.floodguard(
        "explain", "-c", str(glab.config_path), "--json", STALE).stdout)
    told = account["endpoint_suspensions"] + [h for h in account["history"]
                                              if h.get("scope") == "aor"]
    assert told and {t["ip"] for t in told} == {NAT}, account


def lockdown_run(glab: GuardLab, src: str, server: str, *args: str) -> dict[str, Any]:
    """office.py with a guesser spraying 100 AORs (2 guesses/s) for 8 s: the phones kept
    registering every time, one lockdown of ``src`` came after 5 sprayed failures, the guesser
    got a handful of answers (nothing accepted) and no address was banned. The lockdown event."""
    out = glab.client.run(
        sys.executable, str(OFFICE), "--server", server, "--phones", ",".join(PHONES),
        "--stale", STALE, "--duration", "8", "--guesser-aors", "100", "--guesser-gap", "0.5",
        *args, env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    result = json.loads(out)
    phones, guesses = result["phones"], result["guesser"]
    events = glab.events()
    assert phones["failed"] == 0 and phones["ok"] >= 2 * len(PHONES), phones
    (lockdown,) = [e for e in events if e["event"] == "lockdown"]
    assert lockdown["ip"] == src and lockdown["failures"] == 5, lockdown
    answered = [status for _, status in guesses if status is not None]
    assert len(guesses) >= 6 and len(answered) <= 40, guesses
    assert all(status in (401, 403) for status in answered), answered  # nothing accepted
    assert not [e for e in events if e["event"] == "ban"], events
    return lockdown


@pytest.mark.parametrize("registrar", ["floodguard", "kamailio"])
def test_a_guesser_behind_the_office_address_locks_it_down_and_the_phones_keep_working(
        glab: GuardLab, registrar: str) -> None:
    """Issue #16 item 3: the office's phones, its stale phone and a guesser spraying 100 AORs
    (2 guesses/s), all on one address. Spraying from an address holding known-good pairs puts
    it in lockdown instead of a ban: the guesser gets the handful of answers that led there,
    the phones keep registering every time, nothing goes into the kernel ban set."""
    start(glab, CONFIG, registrar=registrar)
    lockdown = lockdown_run(glab, NAT, SERVER4, "--src", NAT)
    assert NAT not in glab.ban_set()
    source = json.loads(glab.server.floodguard(
        "explain", "-c", str(glab.config_path), "--json", NAT).stdout)
    assert source["lockdown"] is not None and source["ban"] is None, source
    assert source["verdict"].startswith("in lockdown"), source
    # in the kernel too: the phones' UDP ports pass, the rest of the address is dropped there
    assert lockdown["kernel"] is True and lockdown["passes"] >= len(PHONES), lockdown
    assert source["lockdown"]["in_kernel"] is True, source
    locked = glab.server.run("ipset", "list", "floodguard-lockdown").stdout
    assert f"\n{NAT} timeout" in locked, locked
    passes = [line for line in glab.server.run("ipset", "list", "floodguard-pass").stdout
              .splitlines() if line.startswith(f"{NAT},udp:")]
    assert len(passes) == lockdown["passes"], passes
    raw = glab.server.run("iptables", "-t", "raw", "-L", "FLOODGUARD-RAW", "-v", "-n", "-x").stdout
    (rule,) = [line for line in raw.splitlines() if "floodguard-lockdown" in line]
    assert int(rule.split()[0]) > 0, raw  # the guesser's later packets died in the kernel


def test_a_guesser_in_an_ipv6_office_locks_down_its_64_and_each_phone_passes_the_kernel(
        glab: GuardLab) -> None:
    """The lockdown's key is the source's /64, its pass entries are the phones' own addresses:
    the guesser (another address of the /64) is dropped in the kernel, the phones register."""
    tag = glab.server.name.split("-")[1]
    glab.server.run("ip", "-6", "addr", "add", f"{SERVER6}/48", "dev", f"fg{tag}s", "nodad")
    for address in [*PHONES6, STALE6, GUESSER6]:
        glab.client.run("ip", "-6", "addr", "add", f"{address}/48", "dev", f"fg{tag}c", "nodad")
    glab.write_config("[scanner]\nuser_agents = []\n" + CONFIG)
    glab.apply()
    glab.start_registrar(extra_listen=(f"[{SERVER6}]:5060",))
    glab.start_guard()
    lockdown = lockdown_run(glab, OFFICE6, SERVER6, "--src", STALE6,
                            "--phone-srcs", ",".join(PHONES6), "--guesser-src", GUESSER6)
    assert lockdown["kernel"] is True and lockdown["passes"] >= len(PHONES), lockdown
    assert OFFICE6 not in glab.server.run("ipset", "list", "floodguard-ban-net6").stdout
    # the kernel holds the /64 in lockdown and each phone's own address and port as a pass
    locked = glab.server.run("ipset", "list", "floodguard-lockdown-net6").stdout
    assert f"\n{OFFICE6}/64 timeout" in locked, locked
    passes = [line.split()[0] for line in glab.server.run(
        "ipset", "list", "floodguard-pass-v6").stdout.splitlines() if line.startswith(OFFICE6)]
    assert len(passes) == lockdown["passes"], passes
    assert {entry.split(",")[0] for entry in passes} == set(PHONES6), passes
    assert all(entry.split(",")[1].startswith("udp:52") for entry in passes), passes
    raw = glab.server.run("ip6tables", "-t", "raw", "-L", "FLOODGUARD-RAW", "-v", "-n",
                          "-x").stdout
    (rule,) = [line for line in raw.splitlines() if "floodguard-lockdown-net6" in line]
    assert int(rule.split()[0]) > 0, raw  # the guesser's later packets died in the kernel
