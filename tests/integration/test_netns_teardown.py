"""The namespace fixtures leave no process behind: Kamailio's forked workers included.

Killing only the process a test started left Kamailio's children running, orphaned in a
namespace whose name was gone. The teardown now kills everything inside the namespace first.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from .conftest import create_netns, netns_pids, remove_netns

pytestmark = pytest.mark.root("ip", "kamailio")

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def _alive_in(pids: list[int], inode: int) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino == inode:
                alive.append(pid)
        except OSError:
            pass
    return alive


def test_teardown_kills_kamailio_children(tmp_path: Path) -> None:
    ns = create_netns("leak")
    inode = os.stat(f"/run/netns/{ns.name}").st_ino
    try:
        cfg = tmp_path / "kamailio.cfg"
        cfg.write_text((ASSETS / "kamailio.cfg").read_text()
                       .replace("CTL_SOCKET", str(tmp_path / "kamctl.sock")))
        log = open(tmp_path / "kamailio.log", "w")  # noqa: SIM115 — closed with the process
        ns.procs.append(subprocess.Popen(  # type: ignore[arg-type]
            ["ip", "netns", "exec", ns.name, "kamailio", "-f", str(cfg), "-DD", "-E",
             "-l", "udp:127.0.0.1:5060", "-w", str(tmp_path)],
            stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 10
        while len(pids := netns_pids(ns.name)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        log_text = (tmp_path / "kamailio.log").read_text()
        assert len(pids) >= 3, f"kamailio forked no workers: {log_text}"
    finally:
        remove_netns(ns)
    assert _alive_in(pids, inode) == []
    assert not Path("/run/netns", ns.name).exists()
