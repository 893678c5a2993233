"""The Vagrant lab booted for real: ``vagrant up`` with libvirt, then the README's lab commands.

The box is built locally from Debian 12 packages (vagrantbox.py, cached); the Vagrantfile's
ansible provisioner deploys the role onto the ``sip`` VM and the attack tools onto ``attacker``.
Then, as the README's "Vagrant lab" runs them: a phone registers, a REGISTER flood is cut by
the kernel limits, svcrack's guesses on 1002 suspend that endpoint of the attacker VM (its
address holds the phone's known-good pair, so it is shared-capable: the phone's account keeps
registering), and ``floodguard blacklist remove`` lifts it. All traffic stays on the lab's
private network (192.168.56.0/24). tests/integration/test_vagrant_lab_sequence.py runs the same
sequence in network namespaces within ``make test``.

KVM: the VMs need one that boots a stock Debian kernel; where there is none the test fails
with the reason (never a skip), unless FLOODGUARD_VAGRANT_ACCEL=tcg asks for QEMU's software
emulation (vagrantlab.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .vagrantbox import build_box
from .vagrantlab import Lab, libvirt_driver, libvirt_running

pytestmark = pytest.mark.root("vagrant", "virsh", "libvirtd", "qemu-system-x86_64", "qemu-img",
                              "mkfs.ext4", "debootstrap", "ansible-playbook", "rsync")

SIP_IP = "192.168.56.10"
ATTACKER_IP = "192.168.56.20"
# The README's commands (section "Vagrant lab"), run as written.
PHONE = ("printf 'SEQUENTIAL\\n1001;[authentication username=1001 password=lab-1001-secret]\\n' "
         "> u.csv; sipp 192.168.56.10 -sf /vagrant/tests/assets/register.xml -inf u.csv -m 1 "
         "-nostdin")
FLOOD = ("sipp 192.168.56.10 -sf /vagrant/tests/assets/register.xml -inf u.csv -r 500 -m 5000 "
         "-nostdin")
CRACK = "svcrack -u 1002 -r 1-100 -P 5062 -t 0.3 192.168.56.10"
# One registration that gives up after 15 s instead of retransmitting for ever.
ONE_REGISTER = PHONE + " -timeout 15s -timeout_error"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    work = tmp_path_factory.mktemp("vagrant")
    started = time.monotonic()
    box = build_box()
    print(f"\nbox {box}: {time.monotonic() - started:.0f}s")
    with libvirt_running():
        machines = Lab(work, box, libvirt_driver(box, work))
        try:
            machines.add_box()
            print(f"vagrant up ({machines.driver}): {machines.up(timeout=2400):.0f}s")
            yield machines
        finally:
            machines.destroy()


# `floodguard show` reads every rule's counters: slow under software emulation after a flood.
SHOW_TIMEOUT = 600


def blacklist(lab: Lab) -> list[dict[str, object]]:
    """The attacker VM's entries in `floodguard blacklist list --json`."""
    text = lab.ssh("sip", "sudo floodguard blacklist list --json").stdout
    return [entry for entry in json.loads(text) if entry.get("ip") == ATTACKER_IP]


def register_drops(lab: Lab) -> int:
    """Packets the per-source REGISTER limit (hashlimit fg-reg-*) dropped, from `floodguard
    show --json` (the rules with their counters)."""
    shown = json.loads(lab.ssh("sip", "sudo floodguard show --json",
                               timeout=SHOW_TIMEOUT).stdout)
    return sum(int(rule["packets"]) for rule in shown["rules"]
               if "fg-reg-" in rule["rule"] and rule["rule"].endswith("-j DROP"))


def test_phone_registers(lab: Lab) -> None:
    """The README's phone (SIPp on the attacker VM, account 1001) registers; `floodguard
    endpoints` on the sip VM lists its binding."""
    lab.ssh("attacker", PHONE, timeout=120)
    bindings = json.loads(lab.ssh("sip", "sudo floodguard endpoints --json").stdout)
    assert any(str(b.get("aor")).startswith("1001@") and ATTACKER_IP in str(b.get("source"))
               for b in bindings), bindings


def test_register_flood_is_cut(lab: Lab) -> None:
    """The README's flood (500 REGISTER/s) meets the kernel's per-source REGISTER limit: the
    limit's drop counter grows by hundreds; the phone still registers afterwards."""
    before = register_drops(lab)
    lab.ssh("attacker", FLOOD, check=False, timeout=300)
    dropped = register_drops(lab) - before
    assert dropped >= 500, dropped


def test_svcrack_suspends_the_endpoint(lab: Lab) -> None:
    """The README's svcrack run against account 1002 ends with that endpoint of the attacker VM
    suspended (kind endpoint, not in the kernel ban set): the phone's known-good pair makes the
    address shared-capable, so its own account 1001 still registers."""
    crack = lab.ssh("attacker", CRACK, check=False, timeout=300)
    deadline = time.monotonic() + 120
    while not blacklist(lab) and time.monotonic() < deadline:
        time.sleep(2)
    held = blacklist(lab)
    if [(e.get("scope"), str(e.get("aor")).split("@")[0], e.get("in_kernel"))
            for e in held] != [("aor", "1002", False)]:
        why = lab.ssh("sip", f"sudo floodguard explain {ATTACKER_IP}; sudo journalctl -u "
                             "floodguard -n 40 --no-pager", check=False, timeout=SHOW_TIMEOUT)
        raise AssertionError(f"blacklist: {held}\nsvcrack: {crack.stdout[-1500:]}"
                             f"{crack.stderr[-500:]}\n{why.stdout}{why.stderr}")
    lab.ssh("attacker", ONE_REGISTER, timeout=120)


def test_blacklist_remove_lifts_the_suspension(lab: Lab) -> None:
    """`floodguard blacklist remove` (the README's last command) lifts the attacker VM's
    suspension: nothing of it is left in the list, and the phone registers."""
    lab.ssh("sip", f"sudo floodguard blacklist list; sudo floodguard blacklist remove "
                   f"{ATTACKER_IP}")
    assert blacklist(lab) == []
    lab.ssh("attacker", ONE_REGISTER, timeout=120)


def test_lab_files_are_the_readme_s() -> None:
    """The commands above are the README's, word for word."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for command in (FLOOD, CRACK, "sudo floodguard blacklist remove 192.168.56.20"):
        assert command in readme, command
