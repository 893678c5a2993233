"""The README's Vagrant lab, in network namespaces: one client address runs its commands in order.

The lab's attacker VM (one address) registers a phone (account 1001), floods REGISTERs with the
same credentials, then runs svcrack against account 1002; the operator lists the blacklist and
lifts the address with ``floodguard blacklist remove``. Here the same commands run against the
real stack (kernel rules, guard, floodguard's own registrar, scanner user agents off as in the
Vagrantfile's LAB_VARS); tests/deploy/test_vagrant.py runs them on the VMs. The phone made the
address shared-capable (a known-good pair), so svcrack's guesses suspend only the endpoint
1002 from it, never the whole address (README, "Suspension behind a shared address").
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from tests.svcrack_run import run_svcrack

from .conftest import CLIENTS4, SERVER4
from .guardkit import ASSETS, GuardLab, require, start

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables", "sipp", "svcrack")

# svcrack always sends from the client namespace's primary (first) address: the whole lab runs
# from that one address, as from the attacker VM.
LAB_HOST = CLIENTS4[0]


def sipp(lab: GuardLab, *args: str) -> subprocess.CompletedProcess[str]:
    """The README's SIPp phone (register.xml, account 1001, local port 5060) from LAB_HOST."""
    require("sipp")
    csv = lab.tmp / "u.csv"
    csv.write_text("SEQUENTIAL\n1001;[authentication username=1001 password=secret1001]\n")
    return lab.client.run("timeout", "60", "sipp", SERVER4, "-sf", str(ASSETS / "register.xml"),
                          "-inf", str(csv), "-i", LAB_HOST, "-nostdin", *args, check=False)


def one_register(lab: GuardLab) -> subprocess.CompletedProcess[str]:
    """One registration that gives up after 15 s (test_vagrant.py's ONE_REGISTER)."""
    return sipp(lab, "-m", "1", "-timeout", "15s", "-timeout_error")


def cli(lab: GuardLab, *args: str) -> Any:
    assert lab.config_path is not None
    return json.loads(lab.server.floodguard(*args, "-c", str(lab.config_path), "--json").stdout)


def register_drops(lab: GuardLab) -> int:
    """Packets the per-source REGISTER limit dropped (test_vagrant.py's register_drops)."""
    assert lab.config_path is not None
    return sum(int(rule["packets"]) for rule in lab.server.show(lab.config_path)["rules"]
               if "fg-reg-" in rule["rule"] and rule["rule"].endswith("-j DROP"))


def entries(lab: GuardLab) -> list[dict[str, Any]]:
    return [e for e in cli(lab, "blacklist", "list") if e.get("ip") == LAB_HOST]


def test_vagrant_lab_sequence(glab: GuardLab) -> None:
    start(glab, registrar="floodguard")
    phone = one_register(glab)
    assert phone.returncode == 0, phone.stdout[-2000:]

    # the flood: the README's rate, fewer calls (the lab's 5000 only take longer); a dropped
    # call gives up 2 s after its last retransmission instead of at timer F (~32 s)
    before = register_drops(glab)
    sipp(glab, "-r", "500", "-m", "1000", "-recv_timeout", "2000")
    assert register_drops(glab) - before >= 300

    # svcrack against 1002 from the phone's address: that endpoint is suspended, not the address
    require("svcrack")
    # the flood emptied this source's kernel REGISTER bucket (5/s, burst 10); svcrack sends its
    # 100 guesses within half a second, so let the bucket refill as a person typing would
    time.sleep(3)
    # off the phone's port 5060, where the liveness OPTIONS would stop svcrack early; paced
    # under the kernel's REGISTER limit, so its guesses are answered, not dropped; once 1002 is
    # suspended nothing answers: svcrack stops after 2 s of silence (tests/svcrack_run.py)
    run_svcrack(["ip", "netns", "exec", glab.client.name],
                ["-u", "1002", "-r", "1-100", "-P", "5062", "-t", "0.3", "--maximumtime", "2",
                 SERVER4])
    held = entries(glab)
    assert [(e["scope"], e["aor"].split("@")[0], e["in_kernel"]) for e in held] == [
        ("aor", "1002", False)], held
    assert LAB_HOST not in glab.ban_set()
    explained = cli(glab, "explain", LAB_HOST)
    assert explained["shared_capable"] and explained["ban"] is None, explained
    again = one_register(glab)  # the phone's own account still passes
    assert again.returncode == 0, again.stdout[-2000:]

    # the operator lifts it: nothing of the address is left in the list, the phone registers
    removed = cli(glab, "blacklist", "remove", LAB_HOST)
    assert LAB_HOST in removed["removed"], removed
    assert entries(glab) == []
    last = one_register(glab)
    assert last.returncode == 0, last.stdout[-2000:]


def test_phone_registers_over_a_retransmitting_link(glab: GuardLab) -> None:
    """The VM's symptom after the lift (REGISTER, 401, REGISTER, then a second 401 with a fresh
    challenge): under software emulation the round trip exceeds register.xml's 500 ms
    retransmission timer, the first REGISTER goes out twice and the registrar challenges each
    copy; SIPp matched answers by Call-ID, so the late 401 to CSeq 1 ended the call
    (register.xml now names its transactions). Here the kernel duplicates the first REGISTER;
    the phone still registers, and a wrong password still fails."""
    start(glab, registrar="floodguard")
    glab.client.run("iptables", "-t", "mangle", "-A", "OUTPUT", "-p", "udp", "--dport", "5060",
                    "-m", "string", "--algo", "bm", "--string", "CSeq: 1 REGISTER",
                    "-j", "TEE", "--gateway", SERVER4)
    phone = one_register(glab)
    assert phone.returncode == 0, phone.stdout[-2000:]
    (glab.tmp / "u.csv").write_text(
        "SEQUENTIAL\n1001;[authentication username=1001 password=wrong]\n")
    wrong = glab.client.run("timeout", "60", "sipp", SERVER4, "-sf",
                            str(ASSETS / "register.xml"), "-inf", str(glab.tmp / "u.csv"),
                            "-i", LAB_HOST, "-nostdin", "-m", "1", "-timeout", "5s",
                            "-timeout_error", check=False)
    assert wrong.returncode != 0, wrong.stdout[-2000:]
