"""Operating the guard: blacklist commands with and without a running guard, SIGHUP reload,
a dead worker restarted, several queue workers, conntrack entries forgotten on ban."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest

from floodguard.store import Store

from .conftest import CLIENTS4, SERVER4
from .guardkit import GuardLab, start, svcrack

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save",
                              "kamailio", "sipp", "svcrack", "conntrack", "tcpdump")

UDPSEND = Path(__file__).with_name("udpsend.py")
ATTACKER, PHONE, OTHER, SPARE = CLIENTS4


def fg(lab: GuardLab, *args: str, check: bool = True) -> str:
    assert lab.config_path is not None
    result = lab.server.floodguard(*args, "-c", str(lab.config_path), check=check)
    return result.stdout + result.stderr


def wait_for(predicate, seconds: float = 5.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_blacklist_commands_without_and_with_a_running_guard(glab: GuardLab) -> None:
    glab.write_config('[blacklist]\nallow = ["127.0.0.0/8", "10.250.0.5/32"]\n')
    glab.apply()
    # guard not running: add, list, explain, remove all act on the store and the kernel set
    assert "banned 10.250.0.2 for 120 s" in fg(glab, "blacklist", "add", ATTACKER, "--ttl", "120",
                                              "--reason", "seen in logs")
    assert ATTACKER in glab.ban_set()
    listing = json.loads(fg(glab, "blacklist", "list", "--json"))
    assert [(b["ip"], b["kind"], b["in_kernel"]) for b in listing] == [(ATTACKER, "manual", True)]
    assert "seen in logs" in fg(glab, "blacklist", "explain", ATTACKER)
    refused = glab.server.floodguard("blacklist", "add", SPARE, "-c", str(glab.config_path),
                                     check=False)
    assert refused.returncode == 4 and "allow list" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert "removed" in fg(glab, "blacklist", "remove", ATTACKER)
    assert ATTACKER not in glab.ban_set()
    assert "not banned" in fg(glab, "blacklist", "explain", ATTACKER)
    bad = glab.server.floodguard("blacklist", "add", "not-an-ip", "-c", str(glab.config_path),
                                 check=False)
    assert bad.returncode == 2 and "not an IP address" in bad.stderr
    # guard running: a manual ban reaches its engine too, and a removal lifts it there
    glab.start_kamailio()
    glab.start_guard()
    fg(glab, "blacklist", "add", OTHER, "--ttl", "300")
    time.sleep(1.0)  # the guard picks operator commands up within a second
    glab.server.run("ipset", "del", "floodguard-ban", OTHER)  # only the guard can now drop it
    out = glab.client.run(sys.executable, str(UDPSEND), "--src", OTHER, "--sport", "5097",
                          "--dst", SERVER4, "--kind", "register", "--count", "3",
                          "--interval", "0.2").stdout
    assert json.loads(out)["answered"] == 0
    fg(glab, "blacklist", "remove", OTHER)
    time.sleep(1.5)
    out = glab.client.run(sys.executable, str(UDPSEND), "--src", OTHER, "--sport", "5096",
                          "--dst", SERVER4, "--kind", "register", "--count", "3",
                          "--interval", "0.2").stdout
    assert json.loads(out)["answered"] == 3


def test_sighup_reloads_config_and_a_killed_worker_is_restarted(glab: GuardLab) -> None:
    start(glab)
    assert glab.guard is not None
    # reload: the new allow list covers the attacker, so its failures no longer count
    glab.write_config('[scanner]\nuser_agents = []\n'
                      f'[blacklist]\nallow = ["127.0.0.0/8", "{ATTACKER}/32"]\n')
    glab.guard.send_signal(signal.SIGHUP)
    assert wait_for(lambda: any(e["event"] == "reload" for e in glab.events()))
    svcrack(glab, ATTACKER, tries=12)
    assert ATTACKER not in glab.ban_set()
    # ... and not because the guesses never reached it: the guard judged them, allow-listed
    time.sleep(1.5)  # counters are published every second
    store = Store(glab.tmp / "state.db")
    try:
        snap = store.load_snapshot("counters-engine-q0")
    finally:
        store.close()
    assert snap is not None and snap[1]["verdicts"].get("pass:allow", 0) >= 12, snap
    # a worker killed outright comes back and keeps enforcing
    worker = glab.server.run("pgrep", "-P", str(glab.guard.pid)).stdout.split()[0]
    glab.server.run("kill", "-9", worker)
    assert wait_for(lambda: any(e["event"] == "worker_restarted" for e in glab.events()), 10)
    assert wait_for(lambda: sum(e["event"] == "guard_started" for e in glab.events()) >= 2, 10)
    svcrack(glab, PHONE)
    assert PHONE in glab.ban_set()
    assert glab.stop_guard() == 0
    assert any(e["event"] == "guard_stopped" for e in glab.events())


def test_queue_workers_stop_when_the_supervisor_is_killed(glab: GuardLab) -> None:
    """kill -9 of the guard's supervisor (outside systemd nothing else reaps its workers) must
    not leave orphans consuming the queues: a restarted guard could not bind them."""
    start(glab, "[queue]\nworkers = 2\n")
    assert glab.guard is not None
    assert wait_for(lambda: sum(e["event"] == "guard_started" for e in glab.events()) == 2)
    workers = glab.server.run("pgrep", "-P", str(glab.guard.pid)).stdout.split()
    assert len(workers) == 2, workers
    glab.guard.kill()
    glab.guard.wait(10)
    assert wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), 10), \
        f"orphaned queue workers still running: {workers}"
    # they stopped as on SIGTERM, and a new guard takes the queues again
    assert sum(e["event"] == "guard_stopped" for e in glab.events()) == 2
    glab.start_guard()
    svcrack(glab, ATTACKER)
    assert ATTACKER in glab.ban_set()


def test_two_queue_workers_and_conntrack_forgotten_on_ban(glab: GuardLab) -> None:
    start(glab, "[queue]\nworkers = 2\n")
    assert glab.guard is not None
    assert wait_for(lambda: sum(e["event"] == "guard_started" for e in glab.events()) == 2)
    # the attacker also holds a TCP connection open: a ban must cut it (UDP from a banned
    # source dies in raw PREROUTING before conntrack, so its UDP entries just time out)
    holder = glab.client.popen(sys.executable, "-c", (
        "import socket, time; s = socket.create_connection(('" + SERVER4 + "', 5060), "
        "source_address=('" + ATTACKER + "', 0)); print('up', flush=True); time.sleep(60)"))
    assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
    tcp = glab.server.run("conntrack", "-L", "-p", "tcp", "-s", ATTACKER, check=False)
    assert f"src={ATTACKER}" in tcp.stdout
    for src in (ATTACKER, OTHER):
        svcrack(glab, src)
    bans = glab.ban_set()
    assert ATTACKER in bans and OTHER in bans
    assert wait_for(lambda: f"src={ATTACKER}" not in glab.server.run(
        "conntrack", "-L", "-p", "tcp", "-s", ATTACKER, check=False).stdout, 5)
    assert glab.sipp_register(PHONE, [("1003", "secret1003")], calls=3, rate=2,
                              port=5075)["successful"] == 3


def test_replay_of_a_capture_gives_the_same_bans_as_the_live_run(glab: GuardLab) -> None:
    start(glab)
    link = glab.server.run("ip", "-o", "link", "show", "type", "veth").stdout.split(":")[1]
    capture = glab.tmp / "live.pcap"
    dump = glab.server.popen("tcpdump", "-i", link.strip().split("@")[0], "-U", "-n", "-w",
                             str(capture), "udp", "port", "5060")
    time.sleep(1.0)
    svcrack(glab, ATTACKER)
    time.sleep(0.5)
    dump.terminate()
    dump.communicate(timeout=10)
    live = [e for e in glab.events() if e["event"] in ("suspend", "ban")]
    assert live, "the live run banned nobody"
    report = json.loads(fg(glab, "replay", str(capture), "--json"))
    replayed = [(d["ip"], d["kind"], d["failures"], d["seconds"]) for d in report["decisions"]]
    assert replayed == [(e["ip"], e["kind"], e["failures"], e["seconds"]) for e in live]


def test_status_and_metrics_reflect_a_real_flood(glab: GuardLab) -> None:
    start(glab)
    out = json.loads(glab.client.run(
        sys.executable, str(UDPSEND), "--src", ATTACKER, "--sport", "5095", "--dst", SERVER4,
        "--kind", "register", "--count", "2000", "--interval", "0.001").stdout)
    sent, answered = out["sent"], out["answered"]
    assert sent == 2000
    time.sleep(1.5)  # the guard publishes its counters every second
    data = json.loads(fg(glab, "status", "--json", "--interval", "0.2", check=False))
    drops = data["kernel"]["drops"]
    # every REGISTER is either dropped by the per-source REGISTER limit or queued to the guard,
    # which passes what the registrar then answers
    queued = data["kernel"]["queued"]
    assert drops.get("register-rate", 0) + queued == sent
    assert 5 * 2 + 10 <= queued <= 5 * 3 + 10 + 5
    verdicts = data["guard"]["verdicts"]
    # proof:* count what the guard did to challenges and credentials, not verdicts
    judged = sum(v for k, v in verdicts.items()
                 if k != "pass:response-out" and not k.startswith("proof:"))
    assert data["guard"]["ok"] and judged == queued
    assert verdicts["pass:response-out"] == answered
    assert answered <= queued
    assert data["health"] == []
    metrics = glab.server.run(sys.executable, "-c", (
        "import urllib.request;"
        "print(urllib.request.urlopen('http://127.0.0.1:9477/metrics', timeout=5).read()"
        ".decode())")).stdout
    line = next(m for m in metrics.splitlines()
                if m.startswith('floodguard_kernel_dropped_packets_total{rule="register-rate"}'))
    assert float(line.split()[-1]) == drops["register-rate"]
    assert "floodguard_guard_up 1.0" in metrics


def test_guard_repairs_flushed_rules_and_says_so(glab: GuardLab) -> None:
    """The keeper repairs with what ``floodguard apply`` applied last (recorded in the state
    store), which an operator (or the Ansible handlers) may have applied before reloading the
    guard: with the guard's older copy it would put back the old limits. A file edited but not
    applied is not applied by the keeper either."""
    start(glab)
    assert "--hashlimit-burst 12" not in glab.server.run("iptables", "-t", "raw", "-S").stdout
    glab.write_config('[scanner]\nuser_agents = []\n[limits]\nregister_burst = 12\n')
    glab.apply()
    glab.write_config('[scanner]\nuser_agents = []\n[limits]\nregister_burst = 14\n')
    glab.server.sh("iptables -F FLOODGUARD-SIP && "
                   "iptables -t raw -D PREROUTING -j FLOODGUARD-RAW")
    assert wait_for(lambda: "FLOODGUARD-RAW" in glab.server.run(
        "iptables", "-t", "raw", "-S", "PREROUTING").stdout and "NFQUEUE" in glab.server.run(
        "iptables", "-S", "FLOODGUARD-SIP").stdout, 15)
    assert wait_for(lambda: any(e["event"] == "rules_repaired" for e in glab.events()), 5)
    raw = glab.server.run("iptables", "-t", "raw", "-S").stdout
    assert "--hashlimit-burst 12" in raw and "--hashlimit-burst 14" not in raw


def test_feed_is_imported_on_schedule_into_the_ban_set(glab: GuardLab) -> None:
    feed = glab.tmp / "apiban.txt"
    feed.write_text(f"# list\n{ATTACKER}\n{SPARE}\n198.51.100.99\n")
    server = glab.server.popen(sys.executable, "-m", "http.server", "8089", "--bind", "127.0.0.1",
                               "--directory", str(glab.tmp))
    time.sleep(0.5)
    start(glab, f'[blacklist]\nallow = ["127.0.0.0/8", "{SPARE}/32"]\n'
                '[[feed]]\nname = "apiban"\nsource = "http://127.0.0.1:8089/apiban.txt"\n'
                'interval = 2\nban_time = 900\n')
    assert wait_for(lambda: any(e["event"] == "feed_imported" for e in glab.events()), 10)
    bans = glab.ban_set()
    assert ATTACKER in bans and "198.51.100.99" in bans and SPARE not in bans
    assert 890 <= bans[ATTACKER] <= 900
    assert "feed:apiban" in fg(glab, "blacklist", "explain", ATTACKER)
    server.terminate()
    assert wait_for(lambda: any(e["event"] == "feed_error" for e in glab.events()), 10)
    assert ATTACKER in glab.ban_set()  # a feed that is down keeps what it banned
