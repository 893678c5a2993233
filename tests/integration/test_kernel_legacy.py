"""The legacy backend is iptables-legacy-restore fed the nft backend's restore text (issue #17
item 2): no python-iptables (broken with iptables 1.8.11, Debian 13's), the xtables lock
respected, on the real kernel in namespaces. The shared guarantees (atomic, idempotent, remove,
ban restore, foreign rules untouched) run for both backends in test_kernel_apply.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from floodguard.kernel.iptables import parse_save

from .conftest import CLIENTS4, SERVER4, Lab

pytestmark = pytest.mark.root("ip", "ipset", "iptables-legacy-save", "iptables-legacy-restore")


def without_iptc(tmp: Path) -> dict[str, str]:
    """An environment in which ``import iptc`` fails, as on a host without python-iptables."""
    shadow = tmp / "no-iptc"
    shadow.mkdir(exist_ok=True)
    (shadow / "iptc.py").write_text("raise ImportError('python-iptables is not installed')\n")
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(shadow), os.environ.get("PYTHONPATH", "")) if p))


@pytest.mark.parametrize("backend", ["legacy"])
def test_legacy_backend_without_python_iptables(lab: Lab) -> None:
    env = without_iptc(lab.tmp)
    config = lab.config()
    lab.server.run("iptables-legacy", "-A", "INPUT", "-s", "192.0.2.200", "-j", "ACCEPT")
    applied = lab.apply(config, env=env)
    assert "applied (legacy backend)" in applied.stdout
    dry = lab.server.floodguard("apply", "--dry-run", "-c", str(config)).stdout
    for family, tool in ((4, "iptables-legacy-save"), (6, "ip6tables-legacy-save")):
        saved = lab.server.run(tool).stdout.splitlines()
        section = dry.split(f"# IPv{family}: ")[1].split("# IPv")[0]
        rendered = [ln for ln in section.splitlines() if ln.startswith("-A ")]
        assert rendered and all(line in saved for line in rendered), tool
    # a second apply finds everything in place: no table is written, no counter is reset
    lab.server.run("iptables-legacy", "-Z")
    lab.client.run(sys.executable, "-c", (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"s.bind(('{CLIENTS4[3]}', 0)); "
        f"[s.sendto(b'OPTIONS sip:x SIP/2.0\\r\\n\\r\\n', ('{SERVER4}', 5060)) for _ in range(5)]"))
    counted = parse_save(lab.server.run("iptables-legacy-save", "-c").stdout)
    assert any(r.packets for t in counted.values() for r in t.rules), "no counter moved"
    again = lab.apply(config, env=env)
    assert "already up to date" in again.stdout
    assert parse_save(lab.server.run("iptables-legacy-save", "-c").stdout) == counted
    # remove: ours gone, the foreign rule stays
    lab.server.floodguard("remove", "-c", str(config), env=env)
    left = lab.server.run("iptables-legacy-save").stdout
    assert "FLOODGUARD" not in left and "-A INPUT -s 192.0.2.200/32 -j ACCEPT" in left


@pytest.mark.parametrize("backend", ["legacy"])
def test_legacy_apply_waits_for_the_xtables_lock(lab: Lab) -> None:
    """Another legacy iptables command holds the lock: apply waits for it, then succeeds."""
    lock = lab.tmp / "xtables.lock"  # not /run/xtables.lock, which every other test uses
    env = dict(without_iptc(lab.tmp), XTABLES_LOCKFILE=str(lock))
    holder = subprocess.Popen(["flock", str(lock), "sh", "-c", "echo held; sleep 2"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        applied = lab.apply(lab.config(), env=env)
        waited = time.monotonic() - started
    finally:
        holder.wait(timeout=10)
    assert "applied (legacy backend)" in applied.stdout
    assert waited >= 1.0, waited
    assert "-A INPUT -j FLOODGUARD" in lab.server.run("iptables-legacy-save").stdout
