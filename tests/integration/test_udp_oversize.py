"""limits.udp_oversize on the real stack: the guard in front of Kamailio drops a UDP REGISTER
of that many bytes or more unread, and a reload with another value moves the line."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest

from .conftest import CLIENTS4, SERVER4
from .guardkit import GuardLab, start

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save",
                              "kamailio")

UDPSEND = Path(__file__).with_name("udpsend.py")  # its message builders
PHONE = CLIENTS4[1]


SEND = """
import json, socket, sys, time
sys.path.insert(0, sys.argv[1])
from udpsend import message, padded
src, dst, sizes = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
socks = []
for n, size in enumerate(sizes):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((src, 5300 + n))
    sock.sendto(padded(message("register", src, 5300 + n, dst, n), size), (dst, 5060))
    socks.append(sock)
time.sleep(1.0)
answers = []
for sock in socks:
    sock.setblocking(False)
    try:
        answers.append(len(sock.recv(65535)) > 0)
    except BlockingIOError:
        answers.append(False)
print(json.dumps(answers))
"""


def answered(lab: GuardLab, *sizes: int) -> list[bool]:
    """REGISTERs of these sizes (bytes, as IPv4 packets) from one phone, each from its own
    port: which got an answer."""
    out = lab.client.run(sys.executable, "-c", SEND, str(UDPSEND.parent), PHONE, SERVER4,
                         json.dumps(sizes)).stdout
    return list(json.loads(out))


def oversize(lab: GuardLab) -> int:
    assert lab.config_path is not None
    time.sleep(1.2)  # the guard publishes its counters every second
    data = json.loads(lab.server.floodguard("status", "--json", "--interval", "0.2", "-c",
                                            str(lab.config_path), check=False).stdout)
    return int(data["guard"]["verdicts"].get("drop:oversize", 0))


def test_a_changed_udp_oversize_changes_what_is_dropped(glab: GuardLab) -> None:
    start(glab)
    # the default (4,016 bytes): REGISTERs in fragments up to 4,015 bytes reach Kamailio
    assert answered(glab, 2000, 4015, 4016) == [True, True, False]
    # 1,500: the same REGISTER is now oversize, one of 1,499 bytes still passes
    glab.write_config("[scanner]\nuser_agents = []\n[limits]\nudp_oversize = 1500\n")
    assert glab.guard is not None
    reloads = sum(e["event"] == "reload" for e in glab.events())
    glab.guard.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while sum(e["event"] == "reload" for e in glab.events()) == reloads:
        assert time.monotonic() < deadline, "the guard did not reload"
        time.sleep(0.1)
    assert answered(glab, 2000, 1499, 1500) == [False, True, False]
    assert oversize(glab) == 3  # the guard's verdict for the three unanswered
