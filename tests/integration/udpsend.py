"""Send numbered SIP datagrams from a bound source and count the answers (run in a namespace).

    udpsend.py --src IP --sport N --dst IP --kind KIND --count N --interval S [--seconds S]

KIND "bogus-auth": REGISTER for 1002 with a made-up nonce (framing a victim's address);
KIND "register": a plain REGISTER for 1001. Prints {"sent": n, "answered": n}.
"""

from __future__ import annotations

import argparse
import json
import socket
import time


def message(kind: str, src: str, sport: int, dst: str, i: int) -> bytes:
    user = "1002" if kind == "bogus-auth" else "1001"
    lines = [
        f"REGISTER sip:{dst} SIP/2.0",
        f"Via: SIP/2.0/UDP {src}:{sport};branch=z9hG4bK{kind}{i}",
        f"From: <sip:{user}@{dst}>;tag=t{i}",
        f"To: <sip:{user}@{dst}>",
        f"Call-ID: {kind}-{i}@{src}",
        f"CSeq: {2 if kind == 'bogus-auth' else 1} REGISTER",
        "Max-Forwards: 70",
    ]
    if kind == "bogus-auth":
        lines.append(f'Authorization: Digest username="{user}", realm="{dst}", '
                     f'nonce="bogus{i}", uri="sip:{dst}", response="{"0" * 32}"')
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--sport", type=int, required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--kind", choices=["bogus-auth", "register"], required=True)
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--interval", type=float, default=0.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.src, args.sport))
    sock.setblocking(False)
    sent = answered = 0
    end = time.monotonic() + args.seconds
    while sent < args.count and time.monotonic() < end:
        sock.sendto(message(args.kind, args.src, args.sport, args.dst, sent), (args.dst, 5060))
        sent += 1
        if args.interval:
            time.sleep(args.interval)
        try:
            while True:
                sock.recv(65535)
                answered += 1
        except BlockingIOError:
            pass
    time.sleep(0.5)
    try:
        while True:
            sock.recv(65535)
            answered += 1
    except BlockingIOError:
        pass
    print(json.dumps({"sent": sent, "answered": answered}))


if __name__ == "__main__":
    main()
