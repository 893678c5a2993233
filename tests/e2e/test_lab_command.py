"""`floodguard lab` from the command line: Ctrl-C in the middle of an attack removes everything
the lab created (namespaces, rules with them, every process)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from floodguard.lab.topology import lab_namespaces, lab_processes

pytestmark = pytest.mark.root("ip", "iptables", "ipset", "conntrack", "taskset", "svcrack", "svmap",
                              "svwar")


def test_ctrl_c_during_an_attack_tears_everything_down(tmp_path: Path) -> None:
    workdir = tmp_path / "lab"
    proc = subprocess.Popen(
        [sys.executable, "-m", "floodguard.lab.command", "--scenario", "botnet", "--duration",
         "30", "--protected", "--keep", str(workdir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        attack_log = workdir / "botnet-protected" / "attack-botnet.log"
        deadline = time.monotonic() + 60
        while not attack_log.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the attack did not start"
            time.sleep(0.2)
        time.sleep(2)  # mid-attack: rules applied, guard, registrar, phones and bots running
        assert len(lab_processes()) >= 5, "the lab is not running"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    tag = re.search(r"fglab-([0-9a-f]+)-reg", err)
    assert tag is not None, err
    assert not [ns for ns in lab_namespaces() if f"-{tag.group(1)}-" in ns]
    assert not lab_processes(tag.group(1))
