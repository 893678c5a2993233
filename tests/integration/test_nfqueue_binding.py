"""The NFQUEUE binding (floodguard.kernel._nfq through QueueRunner) against the real kernel.

Every test builds a private network namespace (``fgq-<random>``) with an NFQUEUE rule for UDP
port 5060 and runs two helpers in it with ``ip netns exec`` (this file run as a script): a
consumer (``consume``: a QueueRunner with a test policy, exits after the expected number of
packets and prints what its verdict function saw) and the traffic (``traffic``: a UDP listener
plus a sender to 127.0.0.1, prints what arrived). A LOCAL_IN packet the consumer accepts is
delivered within the consumer's verdict call, so once the consumer exits the listener already
holds everything that was accepted. The test process never enters the namespace. Root and a
real kernel are needed: these tests fail without them (never skipped).
"""

from __future__ import annotations

import argparse
import json
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

HELPER = str(Path(__file__).resolve())
QUEUE = 7
SIP = 5060

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save")


# ------------------------------------------------------------------ helpers (run in the netns)

def make_payload(seq: int, size: int) -> bytes:
    head = b"fgq %06d " % seq
    body = bytes(range(256)) * (size // 256 + 1)
    return (head + body)[:size]


def inspect(packet: bytes) -> tuple[int, bool]:
    """(sequence number, the IPv4/UDP packet is whole and carries exactly what was sent)."""
    if len(packet) < 28 or packet[0] != 0x45 or packet[9] != socket.IPPROTO_UDP:
        return -1, False
    data = packet[28:]
    if data[:4] != b"fgq ":
        return -1, False
    seq = int(data[4:10])
    total = int.from_bytes(packet[2:4], "big")
    size = int.from_bytes(packet[24:26], "big") - 8
    return seq, total == len(packet) and data == make_payload(seq, size)


def consume(args: argparse.Namespace) -> None:
    from floodguard.kernel.nfqueue import QueueError, QueueRunner, arrival, arrival_clock

    seen: list[list[int]] = []
    # per packet: its receive stamp, the wall clock, the guard's clock, the monotonic clock
    times: list[list[float]] = []

    def verdict(payload: bytes, hook: int) -> bool:
        seq, intact = inspect(payload)
        seen.append([seq, hook, len(payload), int(intact)])
        times.append([arrival(), time.time(), arrival_clock(), time.monotonic()])
        if args.policy == "drop":
            return False
        if args.policy == "mod3":
            return seq % 3 != 0
        if args.policy == "raise":
            raise ValueError("a bad packet")
        if args.policy == "interrupt" and seq == 10:
            raise KeyboardInterrupt
        return True

    fail_open = args.fail_open == "yes"
    second_error = None
    if args.rebind:
        first = QueueRunner(args.queue, verdict)
        try:
            QueueRunner(args.queue, verdict)
        except QueueError as exc:
            second_error = str(exc)
        first.close()
        first.close()
    runner = QueueRunner(args.queue, verdict, fail_open=fail_open, max_len=args.max_len,
                         accept_overflow=args.accept_overflow == "yes")
    print("ready", flush=True)
    if args.wait:
        sys.stdin.readline()
    interrupts = 0
    deadline = time.monotonic() + 20
    while runner.packets < args.expect and time.monotonic() < deadline:
        try:
            runner.poll(0.1)
        except KeyboardInterrupt:
            interrupts += 1
    queue = runner._queue  # the binding's own counters
    print(json.dumps({
        "seen": seen, "packets": runner.packets, "errors": runner.errors,
        "truncated": runner.truncated, "verdict_errors": queue.verdict_errors,
        "interrupts": interrupts, "second_error": second_error,
        "fail_open": runner.fail_open, "times": times, "arrival_outside": arrival(),
    }), flush=True)
    runner.close()


def traffic(args: argparse.Namespace) -> None:
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.setsockopt(socket.SOL_SOCKET, 33, 64 << 20)  # SO_RCVBUFFORCE: never lose one here
    listener.bind(("127.0.0.1", args.dport))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if args.sport:
        sender.bind(("127.0.0.1", args.sport))
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.size] * args.count
    for seq, size in enumerate(sizes):
        if seq and args.interval:
            time.sleep(args.interval)
        sender.sendto(make_payload(seq, size), ("127.0.0.1", args.dport))
    print("sent", flush=True)
    got: list[list[int]] = []
    quiet_since = None
    while True:
        ready, _, _ = select.select([listener], [], [], 0.05)
        if ready:
            data = listener.recv(70000)
            seq = int(data[4:10]) if data[:4] == b"fgq " else -1
            got.append([seq, len(data), int(data == make_payload(seq, len(data)))])
            quiet_since = None
        elif stop:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 0.2:
                break
    print(json.dumps({"received": got}), flush=True)


def helper_main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="role", required=True)
    c = sub.add_parser("consume")
    c.add_argument("--queue", type=int, default=QUEUE)
    c.add_argument("--policy", choices=["accept", "drop", "mod3", "raise", "interrupt"],
                   default="accept")
    c.add_argument("--fail-open", choices=["yes", "no"], default="yes")
    c.add_argument("--accept-overflow", choices=["yes", "no"], default="no")
    c.add_argument("--max-len", type=int, default=65536)
    c.add_argument("--expect", type=int, required=True)
    c.add_argument("--wait", action="store_true", help="start reading after a line on stdin")
    c.add_argument("--rebind", action="store_true")
    t = sub.add_parser("traffic")
    t.add_argument("--sport", type=int, default=0)
    t.add_argument("--dport", type=int, default=SIP)
    t.add_argument("--count", type=int, default=1)
    t.add_argument("--size", type=int, default=100)
    t.add_argument("--sizes", default="")
    t.add_argument("--interval", type=float, default=0.0)
    args = ap.parse_args()
    if args.role == "consume":
        consume(args)
    else:
        traffic(args)


# ------------------------------------------------------------------ fixtures


@dataclass
class Space:
    name: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def run(self, *argv: str) -> str:
        result = subprocess.run(["ip", "netns", "exec", self.name, *argv], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, f"{argv} failed: {result.stdout}{result.stderr}"
        return result.stdout

    def helper(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, sys.executable, HELPER, *args],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def queue_rule(self, chain: str = "INPUT", match: str = "--dport") -> None:
        self.run("iptables", "-t", "filter", "-A", chain, "-p", "udp", match, str(SIP),
                 "-j", "NFQUEUE", "--queue-num", str(QUEUE))


@pytest.fixture
def ns() -> Iterator[Space]:
    name = f"fgq-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    space = Space(name)
    try:
        space.run("ip", "link", "set", "lo", "up")
        yield space
    finally:
        for proc in space.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        subprocess.run(["ip", "netns", "del", name], timeout=30)


def last_json(proc: subprocess.Popen[str], what: str, timeout: float = 30) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    lines = out.strip().splitlines()
    assert proc.returncode == 0 and lines, f"{what} failed ({proc.returncode}): {out}{err}"
    return json.loads(lines[-1])


def exchange(space: Space, consumer_args: list[str], traffic_args: list[str], *,
             wait: bool = False, stall: float = 0.0) -> tuple[dict[str, Any], list[list[int]]]:
    """Starts the consumer, sends the traffic, returns the consumer's report and what the
    listener received. With ``wait`` the consumer reads only once everything was sent (and
    ``stall`` seconds more)."""
    consumer = space.helper("consume", *consumer_args, *(["--wait"] if wait else []))
    assert consumer.stdout is not None and consumer.stdin is not None
    line = consumer.stdout.readline()
    if line.strip() != "ready":
        consumer.kill()
        raise AssertionError(f"consumer did not start: {line!r} {consumer.communicate()}")
    sender = space.helper("traffic", *traffic_args)
    assert sender.stdout is not None
    line = sender.stdout.readline()
    assert line.strip() == "sent", f"traffic did not send: {line!r} {sender.communicate()}"
    if wait:
        time.sleep(stall)
        consumer.stdin.write("go\n")
        consumer.stdin.flush()
    report = last_json(consumer, "consumer")
    sender.send_signal(signal.SIGTERM)
    received = last_json(sender, "traffic")["received"]
    return report, received


# ------------------------------------------------------------------ tests


def test_accept_delivers_payloads_unchanged_with_local_in_hook(ns: Space) -> None:
    ns.queue_rule()
    report, received = exchange(ns, ["--expect", "200"], ["--count", "200", "--size", "180"])
    assert report["packets"] == 200 and report["errors"] == 0
    assert report["verdict_errors"] == 0 and report["truncated"] == 0
    assert [s[0] for s in report["seen"]] == list(range(200)), "packets out of order or lost"
    assert {(hook, length, intact) for _, hook, length, intact in report["seen"]} == {
        (1, 20 + 8 + 180, 1)}, "the callback must see hook 1 and the exact IP packet"
    assert sorted(received) == [[i, 180, 1] for i in range(200)]


def test_drop_verdict_is_not_delivered(ns: Space) -> None:
    ns.queue_rule()
    report, received = exchange(ns, ["--expect", "100", "--policy", "drop"],
                                ["--count", "100"])
    assert report["packets"] == 100 and report["errors"] == 0 and report["verdict_errors"] == 0
    assert received == []


def test_mixed_batches_drop_exactly_every_third(ns: Space) -> None:
    ns.queue_rule()
    report, received = exchange(ns, ["--expect", "3000", "--policy", "mod3"],
                                ["--count", "3000", "--size", "60"])
    assert report["packets"] == 3000 and report["errors"] == 0
    assert report["verdict_errors"] == 0, "the kernel refused verdicts"
    assert sorted(s[0] for s in report["seen"]) == list(range(3000))
    got = sorted(seq for seq, _, intact in received if intact)
    assert len(received) == len(got) == 2000
    assert got == [i for i in range(3000) if i % 3 != 0]


def test_large_datagrams_arrive_whole_up_to_the_copy_range(ns: Space) -> None:
    from floodguard.kernel.nfqueue import COPY_RANGE

    ns.queue_rule()
    # 20,000 bytes arrive whole; 65,507 (the largest UDP datagram: a 65,535-byte IP packet) is
    # 4 bytes over the kernel's largest copy: handed over cut, counted, and still delivered
    # whole when accepted (the verdict applies to the kernel's packet, not the copy).
    report, received = exchange(ns, ["--expect", "2"], ["--sizes", "20000,65507"])
    seen = sorted(report["seen"])
    assert seen == [[0, 1, 20028, 1], [1, 1, COPY_RANGE, 0]], seen
    assert COPY_RANGE == 65531
    assert report["truncated"] == 1 and report["errors"] == 0
    assert sorted(received) == [[0, 20000, 1], [1, 65507, 1]]


@pytest.mark.parametrize("fail_open", [True, False])
def test_callback_error_gets_the_fail_open_verdict(ns: Space, fail_open: bool) -> None:
    ns.queue_rule()
    report, received = exchange(
        ns, ["--expect", "50", "--policy", "raise", "--fail-open", "yes" if fail_open else "no"],
        ["--count", "50"])
    assert report["fail_open"] is fail_open
    assert report["packets"] == 50 and report["errors"] == 50
    assert len(received) == (50 if fail_open else 0)


def test_interrupt_in_callback_propagates_after_verdicts(ns: Space) -> None:
    ns.queue_rule()
    report, received = exchange(ns, ["--expect", "300", "--policy", "interrupt"],
                                ["--count", "300"])
    # KeyboardInterrupt leaves run() once; the packet it hit got the fail_open verdict, the
    # rest of that read too, and the loop resumed with the following packets.
    assert report["interrupts"] == 1 and report["errors"] == 1
    assert report["packets"] == 300 and report["verdict_errors"] == 0
    assert sorted(seq for seq, _, _ in received) == list(range(300))


@pytest.mark.parametrize("accept_overflow", [True, False])
def test_full_queue_drops_unless_told_to_accept(ns: Space, accept_overflow: bool) -> None:
    ns.queue_rule()
    # max_len 10 and nobody reading while 50 packets come: the kernel queues 10 and drops (the
    # default, also with fail_open) or accepts the other 40 itself; the consumer then drops
    # the 10 it got.
    report, received = exchange(
        ns, ["--expect", "10", "--policy", "drop", "--max-len", "10", "--fail-open", "yes",
             "--accept-overflow", "yes" if accept_overflow else "no"],
        ["--count", "50"], wait=True)
    assert report["packets"] == 10
    assert sorted(s[0] for s in report["seen"]) == list(range(10))
    assert sorted(seq for seq, _, _ in received) == (
        list(range(10, 50)) if accept_overflow else [])


def test_second_bind_is_refused_and_close_allows_binding_again(ns: Space) -> None:
    ns.queue_rule()
    report, received = exchange(ns, ["--expect", "20", "--rebind"], ["--count", "20"])
    error = report["second_error"]
    assert error is not None, "binding a bound queue succeeded"
    assert error.startswith(f"cannot bind NFQUEUE {QUEUE}: ") and "already bound" in error
    assert report["packets"] == 20
    assert len(received) == 20


def test_output_hook_is_reported_as_local_out(ns: Space) -> None:
    ns.queue_rule("OUTPUT", "--sport")
    report, received = exchange(ns, ["--expect", "30"],
                                ["--count", "30", "--sport", str(SIP), "--dport", "5070"])
    assert report["packets"] == 30
    assert {hook for _, hook, _, _ in report["seen"]} == {3}
    assert sorted(seq for seq, _, _ in received) == list(range(30))


if __name__ == "__main__":
    helper_main()


def test_a_stalled_consumer_sees_when_each_packet_arrived(ns: Space) -> None:
    """Ten packets 0.1 s apart wait in the queue while the consumer stalls, then are read at
    once. Each carries the kernel's receive stamp (a bound queue turns them on), and the guard's
    clock (arrival_clock) goes back to it: the packets stay 0.1 s apart on it instead of
    arriving as one burst, and it never runs backwards or ahead of the monotonic clock."""
    ns.queue_rule()
    report, received = exchange(ns, ["--expect", "10"], ["--count", "10", "--interval", "0.1"],
                                wait=True, stall=1.0)
    assert report["packets"] == 10 and len(received) == 10
    times = report["times"]
    stamps = [stamp for stamp, _wall, _clock, _mono in times]
    assert all(stamp > 0 for stamp in stamps), stamps
    # the stamps are the sending times: 0.9 s from first to last, whatever the reading
    assert 0.85 <= stamps[-1] - stamps[0] <= 1.5, stamps
    assert all(later > earlier for earlier, later in zip(stamps, stamps[1:], strict=False))
    lags = [wall - stamp for stamp, wall, _clock, _mono in times]
    assert min(lags) >= 0.9, lags  # every packet waited out the stall
    clocks = [clock for _stamp, _wall, clock, _mono in times]
    monos = [mono for _stamp, _wall, _clock, mono in times]
    assert monos[-1] - monos[0] < 0.3, "read as one burst"
    assert 0.85 <= clocks[-1] - clocks[0] <= 1.5, clocks
    assert all(later >= earlier for earlier, later in zip(clocks, clocks[1:], strict=False))
    assert all(clock <= mono for clock, mono in zip(clocks, monos, strict=True))
    assert report["arrival_outside"] == 0.0
