"""Real packets through the applied rules: floods limited, others untouched, bans beat conntrack,
TCP connection and SYN limits, an allow-listed address inside a banned IPv6 /64.

NFQUEUE has no consumer in these tests: with --queue-bypass (fail_open = true) the kernel
accepts what reaches the queue, which is exactly what these tests count, and also proves the
fail-open behaviour; with fail_open = false the same packets are dropped.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from .conftest import (
    CLIENTS4,
    CLIENTS6,
    FOREIGN_TOP,
    NEIGHBOUR6,
    SERVER4,
    SERVER6,
    SIPNET,
    Lab,
)

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save",
                              "conntrack")

SECONDS = 5.0
FLOOD, SLOW, ALLOWED, SCANNER = 0, 1, 2, 3  # index into CLIENTS4 / CLIENTS6
# register_rate 5/s and register_burst 10 (the defaults) over the sending time, plus slack for
# the sender's last partial second and scheduling on a busy CI box.
SLACK = 3


def test_register_flood_is_limited_per_source(lab: Lab) -> None:
    config = lab.config()
    lab.apply(config)
    sink = lab.start_sink()
    flows = []
    for clients in (CLIENTS4, CLIENTS6):
        flows += [(clients[FLOOD], 1000, "register"), (clients[SLOW], 1, "register"),
                  (clients[ALLOWED], 1000, "register"), (clients[SCANNER], 4, "scanner")]
    flows.append((NEIGHBOUR6, 1, "register"))
    sent = lab.send(flows, SECONDS)
    got = lab.stop_sink(sink)
    elapsed = max(SECONDS, sent["elapsed"])
    limit = 10 + 5 * elapsed + SLACK
    for clients in (CLIENTS4, CLIENTS6):
        flood = got.get(clients[FLOOD], {}).get("REGISTER", 0)
        assert sent["sent"][clients[FLOOD]] == 5000
        assert 20 <= flood <= limit, f"{clients[FLOOD]}: {flood} REGISTER passed"
        assert got[clients[SLOW]] == {"REGISTER": sent["sent"][clients[SLOW]]} == {"REGISTER": 5}
        allowed = got[clients[ALLOWED]]["REGISTER"]
        assert allowed >= 0.99 * sent["sent"][clients[ALLOWED]], f"allow-listed: {allowed}"
        assert clients[SCANNER] not in got, "a friendly-scanner OPTIONS arrived"
    # IPv6 is limited per /64: a second address in the flooder's /64 shares its bucket, so
    # the two together get one source's allowance. (How many of the neighbour's 5 pass depends
    # on when the flood's sender last took a token: CI once saw all 5 pass, within the shared
    # allowance. `explain` below shows the one /64 bucket holding the neighbour.)
    flood6 = got.get(CLIENTS6[FLOOD], {}).get("REGISTER", 0)
    assert flood6 + got.get(NEIGHBOUR6, {}).get("REGISTER", 0) <= limit
    # The counters in `floodguard show` account for the dropped flood.
    status = lab.server.show(config)
    for family in (4, 6):
        dropped = [r for r in status["rules"] if r["family"] == family and "fg-reg-" in r["rule"]]
        assert len(dropped) == 1 and dropped[0]["packets"] >= 5000 - limit
        scanner = [r for r in status["rules"] if r["family"] == family
                   and "friendly-scanner" in r["rule"]]
        assert scanner[0]["packets"] == 20
    # `floodguard explain` reads the kernel's hashlimit tables while a flood runs: the
    # flooder's REGISTER bucket is empty, the slow source's is not (an IPv6 /64 shares one)
    # (the flood outlasts the checks even when each explain is slow on a loaded host; it is
    # stopped once they are done)
    flood = lab.client.popen(sys.executable, str(SIPNET), "send", "--seconds", "60",
                             "--flow", f"{CLIENTS4[FLOOD]},{SERVER4},1000,register",
                             "--flow", f"{CLIENTS6[FLOOD]},{SERVER6},1000,register",
                             "--flow", f"{CLIENTS4[SLOW]},{SERVER4},1,register")
    time.sleep(1.5)
    for source, limited in ((CLIENTS4[FLOOD], True), (CLIENTS6[FLOOD], True),
                            (NEIGHBOUR6, True), (CLIENTS4[SLOW], False)):
        # explain is a snapshot: a flooder's bucket earns a token every 200 ms and holds it
        # until its next packet, so a read can catch it in credit (it happened once in CI). A
        # flooder must read as limited within three reads, the slow source never.
        for _ in range(3):
            report = json.loads(lab.server.floodguard("explain", source, "--json",
                                                      "-c", str(config)).stdout)
            register = [b for b in report["kernel_limits"]
                        if b["purpose"] == "REGISTER per source"]
            assert len(register) == 1, (source, report)
            says_dropped = report["verdict"].startswith("the kernel's rate limits drop it")
            assert says_dropped is register[0]["limited"], (source, report)
            assert limited or not register[0]["limited"], (source, report)
            if register[0]["limited"]:
                break
        assert register[0]["limited"] is limited, (source, report)
    quiet = json.loads(lab.server.floodguard("explain", "10.250.0.99", "--json",
                                             "-c", str(config)).stdout)
    assert not [b for b in quiet["kernel_limits"] if not b["shared"]]
    flood.terminate()
    flood.communicate(timeout=30)


def test_banned_source_is_dropped_despite_established_accept(lab: Lab) -> None:
    for tool in (f"iptables-{lab.backend}", f"ip6tables-{lab.backend}"):
        lab.server.run(tool, "-A", "INPUT", *FOREIGN_TOP)
    config = lab.config()
    lab.apply(config)
    # Make the foreign rule truly first, above floodguard's jump, as another tool might.
    for tool in (f"iptables-{lab.backend}", f"ip6tables-{lab.backend}"):
        lab.server.run(tool, "-I", "INPUT", "1", *FOREIGN_TOP)
    victims = [CLIENTS4[FLOOD], CLIENTS6[FLOOD]]
    bystanders = [CLIENTS4[SLOW], CLIENTS6[SLOW]]

    sink = lab.start_sink(echo=True)
    first = lab.send([(ip, 10, "register") for ip in victims], 0.3, sport=40000)
    got = lab.stop_sink(sink)
    for ip in victims:
        assert first["replies"][ip] == 3 and got[ip]["REGISTER"] == 3
    for tool in (f"iptables-{lab.backend}-save", f"ip6tables-{lab.backend}-save"):
        saved = lab.server.run(tool, "-c").stdout
        top = next(ln for ln in saved.splitlines() if "-A INPUT" in ln)
        assert top.endswith("-A INPUT " + " ".join(FOREIGN_TOP)) and not top.startswith("[0:")
    tracked = lab.server.run("conntrack", "-L", "-p", "udp", "--dport", "5060").stdout
    tracked += lab.server.run("conntrack", "-L", "-f", "ipv6", "-p", "udp",
                              "--dport", "5060").stdout
    # Both flows have seen a reply: their packets now match --ctstate ESTABLISHED.
    assert all(f"src={ip} " in tracked for ip in victims) and "UNREPLIED" not in tracked

    lab.server.python(
        "from floodguard.config import load; from floodguard.kernel.rules import render; "
        "from floodguard.kernel.ipset import SetManager; "
        f"m = SetManager(render(load('{config}')).sets); "
        f"[m.add('ban', ip, 120) for ip in {victims!r}]")
    sink = lab.start_sink(echo=True)
    second = lab.send([(ip, 10, "register") for ip in victims + bystanders], 0.3, sport=40000)
    got = lab.stop_sink(sink)
    for ip in victims:
        assert ip not in got and second["replies"][ip] == 0, f"banned {ip} got through"
    for ip in bystanders:
        assert got[ip]["REGISTER"] == 3
    forgotten = json.loads(lab.server.python(
        "import json; from floodguard.kernel.conntrack import forget; "
        f"print(json.dumps([forget(ip) for ip in {victims!r}]))"))
    assert all(n >= 1 for n in forgotten)


def test_fail_closed_drops_without_a_guard_and_reapply_switches(lab: Lab) -> None:
    closed = lab.config("[queue]\nfail_open = false\n", name="closed.toml")
    lab.apply(closed)
    # Two allow-listed sources and one plain source kept under its REGISTER burst (the limiter
    # keeps its state across the re-apply below: both phases together stay within 10).
    flows = [(CLIENTS4[ALLOWED], 20, "register"), (CLIENTS6[ALLOWED], 20, "register"),
             (CLIENTS4[SLOW], 8, "register")]
    sink = lab.start_sink()
    lab.send(flows, 0.5)
    assert lab.stop_sink(sink) == {}, "packets passed a queue nobody reads with fail_open=false"

    lab.apply(lab.config())
    sink = lab.start_sink()
    lab.send(flows, 0.5)
    got = lab.stop_sink(sink)
    assert {ip: got[ip]["REGISTER"] for ip, _, _ in flows} == {
        CLIENTS4[ALLOWED]: 10, CLIENTS6[ALLOWED]: 10, CLIENTS4[SLOW]: 4}


def test_tcp_connection_limit_and_syn_rate(lab: Lab) -> None:
    lab.apply(lab.config())
    listener = lab.server.popen(sys.executable, str(SIPNET), "listen", "--seconds", "30")
    assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"

    def connect(src: str, waves: str) -> list[int]:
        dst = SERVER6 if ":" in src else SERVER4
        out = lab.client.run(sys.executable, str(SIPNET), "connect", "--src", src,
                             "--dst", dst, "--waves", waves).stdout
        return list(json.loads(out)["established"])

    # 40 SYNs at once from one IPv6 source: the SYN burst (20) passes, the rest is dropped.
    burst = connect(CLIENTS6[SLOW], "40")[0]
    assert 20 <= burst <= 22, burst
    # An IPv4 source holding connections: 20, then after the SYN bucket refilled another 20,
    # of which only 12 fit under the 32-connection cap.
    assert connect(CLIENTS4[SLOW], "20,20") == [20, 12]


def test_an_allow_listed_address_inside_a_feed_banned_64_passes(lab: Lab) -> None:
    """A feed lists one IPv6 address: the kernel bans its /64 (limits.ipv6_prefix), so a
    rotating attacker gains nothing, while one allow-listed /128 in that /64 (a customer's
    phone) still reaches the registrar: the allow set comes first in raw."""
    feed = lab.tmp / "feed.txt"
    feed.write_text(f"{CLIENTS6[FLOOD]}\n", encoding="utf-8")
    config = lab.config(f'[[feed]]\nname = "test"\nsource = "{feed}"\nban_time = 600\n'
                        "[blacklist]\n")
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace('"::1/128", ', f'"::1/128", "{NEIGHBOUR6}/128", '),
                      encoding="utf-8")
    lab.apply(config)
    lab.server.run(sys.executable, "-c", """
import sys
from floodguard.config import load
from floodguard.events import EventLog
from floodguard.feeds import FeedScheduler
from floodguard.kernel.ipset import SetManager
from floodguard.kernel.rules import render
from floodguard.store import Store
cfg = load(sys.argv[1])
FeedScheduler(cfg, EventLog(sys.stdout, json_mode=True), lambda: Store(cfg.state.path),
              lambda: SetManager(render(cfg).sets)).check()
""", str(config))
    assert "fd00:fa:0:1::/64 " in lab.server.run("ipset", "list", "floodguard-ban-net6").stdout
    rotated = "fd00:fa:0:1::77"  # another address of the banned /64
    veth = f"fg{lab.server.name.split('-')[1]}c"  # the lab fixture's client end
    lab.client.run("ip", "-6", "addr", "add", f"{rotated}/48", "dev", veth, "nodad")
    sink = lab.start_sink()
    lab.send([(CLIENTS6[FLOOD], 4, "register"), (rotated, 4, "register"),
              (NEIGHBOUR6, 4, "register"), (CLIENTS6[SLOW], 4, "register")], 1.0)
    got = lab.stop_sink(sink)
    assert CLIENTS6[FLOOD] not in got and rotated not in got, got
    assert got[NEIGHBOUR6] == {"REGISTER": 4} and got[CLIENTS6[SLOW]] == {"REGISTER": 4}, got
