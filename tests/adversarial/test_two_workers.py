"""Attack: a guesser splits its traffic over two guard workers (issue 13, item 7).

With ``[queue] workers = 2`` the kernel used ``--queue-balance``, which hashes the protocol and
both addresses: one source's UDP and TCP traffic could land in different workers, each with its
own policy engine, so a guesser who took the nonce over UDP and guessed over TCP was never
counted ("40/40 uncounted"), and one alternating UDP and TCP needed twice the guesses. The rules
now pick the queue by the last octet of the client's address (u32: source of requests,
destination of responses; 0-127 -> queue 0, 128-255 -> queue 1), so every packet of one source
meets one engine.

Here a guesser at one address answers every challenge properly (opaque echoed, so its UDP
guesses are proven; its TCP guesses are proven by the handshake) with a wrong password,
alternating UDP and TCP. It must be suspended after 6 proven failures counted in ONE engine and
get at most 8 wrong-password answers; under --queue-balance it would get 10 or more, counted
half and half in the two engines. Phones whose addresses fall in different halves are handled
by different workers (each worker's counters in the store), and keep registering over UDP and
TCP. Run in front of Kamailio and of floodguard's own registrar.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial.counterkit import PUBLISHED_WITHIN, worker_counters
from tests.integration.conftest import CLIENTS4, SERVER4
from tests.integration.guardkit import GuardLab, start

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save",
                              "kamailio", "sipp")

GUESSER_SCRIPT = Path(__file__).with_name("guesser.py")
# Queue 0 takes last octets 0-127, queue 1 takes 128-255.
PHONE_Q0 = CLIENTS4[1]                          # 10.250.0.3
GUESSER, PHONE_Q1 = "10.250.0.130", "10.250.0.131"
RETRY = 6  # suspension.register_retry (default)
GUESSES = 12


def _add_addresses(glab: GuardLab, *addresses: str) -> None:
    """Sources in the upper half of the /24, on the client end of the lab's veth pair."""
    veth = f"fg{glab.server.name.split('-')[1]}c"
    for address in addresses:
        glab.client.run("ip", "addr", "add", f"{address}/24", "dev", veth)


def _wait(predicate: Any, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def _engines(glab: GuardLab) -> dict[int, dict[str, Any]]:
    """Each worker's counters, once each published them again."""
    time.sleep(PUBLISHED_WITHIN)
    return {queue: worker_counters(glab.tmp / "state.db", queue) for queue in (0, 1)}


def _phone(glab: GuardLab, src: str, user: str, port: int, transport: str) -> None:
    result = glab.sipp_register(src, [(user, f"secret{user}")], calls=2, rate=4, port=port,
                                transport=transport)
    assert result["successful"] == 2 and result["failed"] == 0, (src, transport, result)


@pytest.mark.parametrize("registrar", ["kamailio", "floodguard"])
def test_guesser_alternating_udp_and_tcp_meets_one_engine(glab: GuardLab,
                                                          registrar: str) -> None:
    _add_addresses(glab, GUESSER, PHONE_Q1)
    start(glab, "[queue]\nworkers = 2\n", registrar=registrar)
    assert _wait(lambda: {e.get("queue") for e in glab.events()
                          if e["event"] == "guard_started"} == {0, 1}), glab.events()
    rules = glab.server.run("iptables-nft-save", "-t", "filter").stdout
    assert "--queue-balance" not in rules, rules

    # phones in both halves register through the two workers, over UDP and TCP
    _phone(glab, PHONE_Q0, "1002", 5071, "u1")
    _phone(glab, PHONE_Q1, "1003", 5072, "t1")

    out = glab.client.run(sys.executable, str(GUESSER_SCRIPT), "--src", GUESSER, "--server",
                          SERVER4, "--user", "1001", "--guesses", str(GUESSES)).stdout
    attack = json.loads(out)
    statuses = [g["status"] for g in attack["guesses"]]
    # the guesses were answered on both transports until the suspension...
    assert attack["wrong_udp"] >= 2 and attack["wrong_tcp"] >= 2, attack
    # ...and stopped after at most 6 proven failures (+2 in flight): under --queue-balance
    # each engine counts only its half and the guesser gets 10 or more answers
    assert attack["wrong"] <= RETRY + 2, attack
    assert statuses[-1] is None, f"the guesser was never cut off: {statuses}"

    assert _wait(lambda: GUESSER in glab.ban_set(), 5), glab.ban_set()
    decided = [e for e in glab.events() if e["event"] in ("suspend", "ban")]
    assert [e["ip"] for e in decided] == [GUESSER], decided
    assert decided[0]["failures"] <= RETRY, decided
    assert decided[0]["aor"].startswith("1001@"), decided

    # the phones register again, with the transports swapped
    _phone(glab, PHONE_Q0, "1002", 5073, "t1")
    _phone(glab, PHONE_Q1, "1003", 5074, "u1")

    engines = _engines(glab)
    stats = {q: engines[q]["engine"] for q in (0, 1)}
    # every failure of the guesser (UDP and TCP) was counted by the upper half's worker alone
    assert stats[1]["failures"] == decided[0]["failures"], stats
    assert stats[0]["failures"] == 0, stats
    assert stats[1]["failures"] + stats[0]["failures"] <= RETRY + 2, stats
    assert stats[1]["ban:suspend"] + stats[1]["ban:blacklist"] == 1, stats
    assert stats[0]["ban:suspend"] + stats[0]["ban:blacklist"] == 0, stats
    # each phone's four registrations (two UDP, two TCP) met its own half's worker only
    assert stats[0]["successes"] == 4 and stats[1]["successes"] == 4, stats
    assert stats[0]["table:known"] == 1 and stats[1]["table:known"] == 1, stats
    # both workers judged requests: queue 0 the lower half, queue 1 the upper half
    for queue in (0, 1):
        assert engines[queue]["verdicts"].get("pass:ok", 0) >= 4, engines[queue]["verdicts"]
    assert PHONE_Q0 not in glab.ban_set() and PHONE_Q1 not in glab.ban_set()
