"""A guard that stalls must not read its backlog as a burst (never punish the neighbours).

A busy host can stop the guard for seconds (CPU contention, a slow disk, a swapped-out page):
packets then wait in the queue, and the guard reads them all at once. Its per-source limits
must judge when each packet arrived, not when the guard got round to it, or a source that sent
well under its limit loses requests to the stall. Here the guard (every process of it) is
stopped with SIGSTOP while one source sends 20 REGISTERs at 4/s, under the per-source REGISTER
limit (5/s, burst 10) that the kernel in front of the guard enforces at arrival. Read at
processing time, the 20 would be one burst and the 11th on would be dropped as
``rate:register``; read at arrival time (floodguard.kernel.nfqueue.arrival_clock) every one
reaches the proof check, which drops them as the spoofed guesses they are (unproven).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from floodguard.lab.procs import children
from tests.adversarial.counterkit import published_verdicts
from tests.adversarial.test_spoofed_credentials import UDPSEND, _deployed_long_ago
from tests.integration.conftest import CLIENTS4, SERVER4
from tests.integration.guardkit import GuardLab, start

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "kamailio")

SOURCE = CLIENTS4[0]
SENT = 20  # twice the per-source REGISTER burst
INTERVAL = 0.25  # 4/s: under the 5/s REGISTER limit


def test_a_stalled_guard_judges_its_backlog_by_arrival(glab: GuardLab) -> None:
    _deployed_long_ago(glab.tmp / "state.db")
    start(glab, registrar="kamailio")
    assert glab.guard is not None
    stopped = [glab.guard.pid, *children(glab.guard.pid)]  # the supervisor, its workers
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        sender = glab.client.run(sys.executable, str(UDPSEND), "--src", SOURCE, "--sport", "5093",
                                 "--dst", SERVER4, "--kind", "bogus-auth", "--count", str(SENT),
                                 "--interval", str(INTERVAL), "--seconds", "30")
        time.sleep(0.5)  # the stall outlasts the sending: everything waits in the queue
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    assert json.loads(sender.stdout) == {"sent": SENT, "answered": 0}
    verdicts = published_verdicts(glab.tmp / "state.db")
    assert not verdicts.get("drop:rate:register"), verdicts
    assert verdicts.get("drop:unproven") == SENT, verdicts
