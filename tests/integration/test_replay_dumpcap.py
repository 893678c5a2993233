"""``floodguard replay`` on captures dumpcap writes: pcapng (its default) and classic pcap (-P).

Real SIP traffic between namespaces: SIPp registers one phone with the right password and
guesses another's from a second address against floodguard's registrar, while two dumpcap
processes capture the same packets on the server's interface, one as pcapng and one as classic
pcap. Replaying either file must find the guessing source suspended after its sixth proven
failure, leave the phone alone, and give the same report (dumpcap's pcapng timestamps are in
nanoseconds, its pcap's in microseconds: times agree to the microsecond).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .registrar_helpers import CLIENT_IP, CLIENT_IP2, auth_line, registrar_env, sipp

pytestmark = pytest.mark.root("ip", "dumpcap", "sipp")

FLOODGUARD = Path(sys.executable).with_name("floodguard")
GUESSES = 8
# pcap's microseconds are the kernel's nanoseconds truncated (up to 0.999 us less than pcapng's),
# and each float near 1.8e9 s is rounded to 0.24 us: the same instant can read 1.2 us apart
SAME_INSTANT = 1.5e-6


def dumpcap(ns: str, dev: str, path: Path, *extra: str) -> subprocess.Popen[bytes]:
    """dumpcap on ``dev`` in ``ns``, once its file has a header (the capture is open by then).
    Only SIP: both captures hold the same packets (not the veth's ARP and IPv6 neighbour
    discovery, which one of them may catch before the other starts)."""
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "dumpcap", "-q", "-i", dev,
                             "-f", "udp port 5060", "-w", str(path), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while not (path.exists() and path.stat().st_size >= 24):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"dumpcap did not start: {proc.communicate()[1].decode()}")
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("dumpcap did not stop on SIGINT") from None
    assert proc.returncode == 0, err.decode()


def replay(path: Path) -> dict[str, Any]:
    result = subprocess.run([str(FLOODGUARD), "replay", "--json", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stdout + result.stderr
    return json.loads(result.stdout)


def test_replay_reads_dumpcaps_pcapng_like_its_pcap(tmp_path: Path) -> None:
    ng, classic = tmp_path / "sip.pcapng", tmp_path / "sip.pcap"
    with registrar_env(tmp_path) as (pair, _):
        ns, dev = pair.server_ns, pair.server_dev
        captures = [dumpcap(ns, dev, ng), dumpcap(ns, dev, classic, "-P")]
        try:
            phone = sipp(pair, "register.xml", user_lines=[auth_line("1001")], port=5071,
                         cwd=tmp_path, local_ip=CLIENT_IP2)
            guesser = sipp(pair, "register_rejected.xml", port=5072, cwd=tmp_path,
                           user_lines=[auth_line("1002", password=f"guess{i}")
                                       for i in range(GUESSES)])
            time.sleep(0.5)  # the last answers reach both captures
        finally:
            for proc in captures:
                stop(proc)
    assert phone.returncode == 0, phone.stdout + phone.stderr
    assert guesser.returncode == 0, guesser.stdout + guesser.stderr
    assert ng.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"  # what dumpcap writes by default
    assert classic.read_bytes()[:4] in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")

    report, reference = replay(ng), replay(classic)
    # a registration and each guess: REGISTER, 401, REGISTER with credentials, 401 or 200
    assert report["packets"] == report["sip_packets"] >= 4 * GUESSES + 4
    assert report["truncated"] is None
    (decision,) = report["decisions"]
    assert (decision["ip"], decision["kind"], decision["scope"], decision["failures"]) == (
        CLIENT_IP, "suspend", "address", 6), decision
    # the guesses after the suspension are dropped; the phone's requests and every answer pass
    verdicts = report["verdicts"]
    assert set(verdicts) == {"pass:ok", "pass:response-out", "drop:suspended"}, verdicts
    assert verdicts["drop:suspended"] >= 2 * (GUESSES - 6), verdicts

    assert {k: v for k, v in report.items() if k not in ("decisions", "first", "last")} == {
        k: v for k, v in reference.items() if k not in ("decisions", "first", "last")}
    assert len(reference["decisions"]) == 1
    for key in ("first", "last"):
        assert abs(report[key] - reference[key]) < SAME_INSTANT, key
    ours, theirs = dict(decision), dict(reference["decisions"][0])
    assert abs(ours.pop("at") - theirs.pop("at")) < SAME_INSTANT
    assert abs(ours.pop("offset") - theirs.pop("offset")) <= 0.0011  # rounded to the ms
    assert ours == theirs
