"""A REGISTER flood with the method in any letter case (a script, not a test).

    registercase_flood.py --src IP --dst IP --line "register sip:" [--rate 50] [--seconds 2]

Sends REGISTERs over UDP from src to dst:5060 at a steady rate, each starting with the given
request-line start (method and URI scheme as written, e.g. ``register sip:``, ``ReGiStEr sIp:``)
followed by the server's address. The registrar and the guard read the method without regard
to case, so the kernel's REGISTER limit has to as well. Prints {"sent": n, "elapsed": s}.
"""

from __future__ import annotations

import argparse
import json
import socket
import time

from floodguard.sip import build
from floodguard.sip.build import hostport


def message(line: str, src: str, dst: str, sport: int, seq: int) -> bytes:
    method, scheme = line.split(" ", 1)
    server = hostport(dst)
    return build.register(server, user="1001", local=hostport(src, sport), method=method,
                          uri=f"{scheme}{server}", call_id=f"rc-{seq}-{sport}@{hostport(src)}",
                          cseq=seq + 1, branch=f"z9hG4bK-rc{seq}", rport=False, tag=f"rc{seq}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--line", required=True)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    family = socket.AF_INET6 if ":" in args.dst else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((args.src, 0))
    sport = sock.getsockname()[1]
    total = int(args.rate * args.seconds)
    start = time.monotonic()
    for seq in range(total):
        delay = start + seq / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sock.sendto(message(args.line, args.src, args.dst, sport, seq), (args.dst, 5060))
    print(json.dumps({"sent": total, "elapsed": time.monotonic() - start}))


if __name__ == "__main__":
    main()
