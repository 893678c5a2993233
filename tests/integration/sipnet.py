"""Plain-socket SIP traffic for the integration tests, run inside a namespace with ip netns exec.

    sipnet.py sink --port 5060 --seconds 20 [--echo]
        Counts UDP datagrams per source address and SIP method (dual-stack), prints "ready"
        once bound and a JSON object {source: {method: count}} when the time is up or on SIGTERM.
        With --echo it answers each datagram with a 200 OK (so conntrack sees a reply).

    sipnet.py listen --port 5060 --seconds 20
        A dual-stack TCP listener (prints "ready"); handshakes complete into its backlog.

    sipnet.py connect --src SRC --dst DST --waves 20,20 [--gap 2.5]
        Opens each wave of TCP connections at once, holding them all; prints JSON
        {"established": [per wave]} counted half a second after each wave's SYNs.

    sipnet.py send --flow SRC,DST,RATE,KIND [--flow ...] --seconds 5 [--port 5060] [--sport N]
        Sends every flow at RATE datagrams/s for the given time from one process, paced by one
        schedule; KIND is "register" or "scanner" (an OPTIONS from a friendly-scanner UA).
        Prints JSON {"elapsed": s, "sent": {"SRC": n}, "replies": {"SRC": n}}.
"""

from __future__ import annotations

import argparse
import heapq
import json
import select
import signal
import socket
import sys
import time

from floodguard.sip import build
from floodguard.sip.build import hostport


def message(kind: str, src: str, dst: str, sport: int, seq: int) -> bytes:
    local, target = hostport(src, sport), hostport(dst)
    call_id, branch, tag = f"{seq}-{sport}@{hostport(src)}", f"z9hG4bK-{seq}", f"t{seq}"
    if kind == "register":
        return build.register(target, user="100", local=local, call_id=call_id, cseq=seq,
                              expires=None, user_agent="Yealink T46", branch=branch,
                              rport=False, tag=tag)
    if kind == "scanner":
        return build.options(f"sip:100@{target}", local=local, call_id=call_id, cseq=seq,
                             contact=f"<sip:100@{local}>", user_agent="Friendly-Scanner",
                             branch=branch, rport=False, tag=tag)
    raise SystemExit(f"unknown kind {kind}")


def sink(port: int, seconds: float, echo: bool) -> None:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("::", port))
    sock.settimeout(0.1)
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    counts: dict[str, dict[str, int]] = {}
    end = time.monotonic() + seconds
    while not stop and time.monotonic() < end:
        try:
            data, addr = sock.recvfrom(65535)
        except TimeoutError:
            continue
        source = addr[0].removeprefix("::ffff:")
        method = data.split(b" ", 1)[0].decode(errors="replace")
        per = counts.setdefault(source, {})
        per[method] = per.get(method, 0) + 1
        if echo:
            sock.sendto(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", addr)
    print(json.dumps(counts), flush=True)


def send(flows: list[str], seconds: float, port: int, sport: int) -> None:
    socks = []
    schedule: list[tuple[float, int, int]] = []  # (due, flow index, sequence)
    start = time.monotonic()
    parsed = []
    for index, flow in enumerate(flows):
        src, dst, rate_text, kind = flow.split(",")
        rate = float(rate_text)
        family = socket.AF_INET6 if ":" in dst else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((src, sport))
        socks.append(sock)
        parsed.append((src, dst, rate, kind, int(rate * seconds), sock.getsockname()[1]))
        heapq.heappush(schedule, (start, index, 0))
    sent = {p[0]: 0 for p in parsed}
    replies = {p[0]: 0 for p in parsed}
    while schedule:
        due, index, seq = heapq.heappop(schedule)
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        src, dst, rate, kind, total, bound_port = parsed[index]
        socks[index].sendto(message(kind, src, dst, bound_port, seq), (dst, port))
        sent[src] += 1
        if seq + 1 < total:
            heapq.heappush(schedule, (start + (seq + 1) / rate, index, seq + 1))
        readable, _, _ = select.select(socks, [], [], 0)
        for sock in readable:
            sock.recv(65535)
            replies[parsed[socks.index(sock)][0]] += 1
    elapsed = time.monotonic() - start
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        readable, _, _ = select.select(socks, [], [], 0.05)
        for sock in readable:
            sock.recv(65535)
            replies[parsed[socks.index(sock)][0]] += 1
    print(json.dumps({"elapsed": elapsed, "sent": sent, "replies": replies}), flush=True)


def listen(port: int, seconds: float) -> None:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", port))
    sock.listen(4096)  # the kernel completes handshakes into the backlog; no accept needed
    print("ready", flush=True)
    time.sleep(seconds)


def connect_waves(src: str, dst: str, port: int, waves: list[int], gap: float) -> None:
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    held: list[socket.socket] = []
    established = []
    for index, count in enumerate(waves):
        if index:
            time.sleep(gap)
        wave = []
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.bind((src, 0))
            sock.setblocking(False)
            sock.connect_ex((dst, port))
            wave.append(sock)
        time.sleep(0.5)  # well inside the first SYN retransmission (1 s)
        _, writable, _ = select.select([], wave, [], 0)
        ok = [s for s in writable if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0]
        established.append(len(ok))
        held += wave
    print(json.dumps({"established": established}), flush=True)
    for sock in held:
        sock.close()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p_sink = sub.add_parser("sink")
    p_sink.add_argument("--port", type=int, default=5060)
    p_sink.add_argument("--seconds", type=float, default=30)
    p_sink.add_argument("--echo", action="store_true")
    p_send = sub.add_parser("send")
    p_send.add_argument("--flow", action="append", required=True)
    p_send.add_argument("--seconds", type=float, default=5)
    p_send.add_argument("--port", type=int, default=5060)
    p_send.add_argument("--sport", type=int, default=0)
    p_listen = sub.add_parser("listen")
    p_listen.add_argument("--port", type=int, default=5060)
    p_listen.add_argument("--seconds", type=float, default=30)
    p_tcp = sub.add_parser("connect")
    p_tcp.add_argument("--src", required=True)
    p_tcp.add_argument("--dst", required=True)
    p_tcp.add_argument("--port", type=int, default=5060)
    p_tcp.add_argument("--waves", default="20")
    p_tcp.add_argument("--gap", type=float, default=2.5)
    args = parser.parse_args(argv)
    if args.command == "sink":
        sink(args.port, args.seconds, args.echo)
    elif args.command == "send":
        send(args.flow, args.seconds, args.port, args.sport)
    elif args.command == "listen":
        listen(args.port, args.seconds)
    else:
        connect_waves(args.src, args.dst, args.port, [int(w) for w in args.waves.split(",")],
                      args.gap)


if __name__ == "__main__":
    main(sys.argv[1:])
