"""The real registrar process (``floodguard registrar -v``) logs JSON events like the guard, each
with its journald priority (issue #17 item 11): ready, a binding made, a worker that died.
Loopback only: no root, no namespace."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from floodguard.registrar.uac import Uac
from floodguard.sip.message import parse_message
from tests.unit.registrar_kit import free_port

from .test_registrar_workers import answers, children

REPO = Path(__file__).resolve().parents[2]
FLOODGUARD = Path(sys.executable).with_name("floodguard")


def _events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_registrar_events_are_json_with_priorities(tmp_path):
    accounts = tmp_path / "accounts.toml"
    accounts.write_text('[[account]]\nuser = "1001"\npassword = "secret"\n')
    port = free_port("127.0.0.1")
    config = tmp_path / "fg.toml"
    config.write_text(f'[registrar]\nlisten = ["127.0.0.1:{port}"]\naccounts = "{accounts}"\n'
                      f'workers = 2\n[state]\npath = "{tmp_path / "state.db"}"\n')
    log = tmp_path / "registrar.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(FLOODGUARD), "registrar", "-c", str(config), "-v"],
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=out)
    try:
        deadline = time.monotonic() + 15
        while len(children(proc.pid)) < 2 or not answers(port):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.bind(("127.0.0.1", 0))
            uac = Uac("1001", "secret", f"127.0.0.1:{port}",
                      f"127.0.0.1:{sock.getsockname()[1]}")
            sock.sendto(uac.register(), ("127.0.0.1", port))
            challenge = sock.recv(65535)
            sock.sendto(uac.register(authorization=uac.authorize(challenge)),
                        ("127.0.0.1", port))
            assert parse_message(sock.recv(65535)).status == 200
        os.kill(children(proc.pid)[1], signal.SIGKILL)  # a worker dies: the others stop
        assert proc.wait(15) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    events = _events(log.read_text())  # every line is a JSON event
    by_name = {e["event"]: e for e in events}
    ready = by_name["registrar_ready"]
    assert ready["priority"] == 5 and ready["addresses"] and "listening on" in ready["message"]
    bound = by_name["register"]
    assert bound["priority"] == 6 and bound["aor"].startswith("1001") and bound["ip"] == \
        "127.0.0.1"
    died = by_name["worker_died"]
    assert died["priority"] == 3 and died["pid"] > 0
