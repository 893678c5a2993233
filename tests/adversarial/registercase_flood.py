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


def host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def message(line: str, src: str, dst: str, sport: int, seq: int) -> bytes:
    method = line.split(" ", 1)[0]
    return (
        f"{line}{host(dst)} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host(src)}:{sport};branch=z9hG4bK-rc{seq}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:1001@{host(dst)}>;tag=rc{seq}\r\n"
        f"To: <sip:1001@{host(dst)}>\r\n"
        f"Call-ID: rc-{seq}-{sport}@{host(src)}\r\n"
        f"CSeq: {seq + 1} {method}\r\n"
        f"Contact: <sip:1001@{host(src)}:{sport}>\r\n"
        "Expires: 3600\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


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
