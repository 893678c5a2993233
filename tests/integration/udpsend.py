"""Send numbered SIP datagrams from a bound source and count the answers (run in a namespace).

    udpsend.py --src IP --sport N --dst IP --kind KIND --count N --interval S [--seconds S]
               [--size BYTES]

KIND "bogus-auth": REGISTER for 1002 with a made-up nonce (framing a victim's address);
KIND "register": a plain REGISTER for 1001. --size pads each message with an X-Pad header to
that many bytes as an IPv4 packet (IP and UDP headers included). Prints {"sent": n, "answered": n}.
"""

from __future__ import annotations

import argparse
import json
import socket
import time

from floodguard.sip import build, digest


def padded(msg: bytes, size: int) -> bytes:
    """msg with an X-Pad header making its IPv4 packet `size` bytes long."""
    head = b"X-Pad: "
    missing = size - 28 - len(msg) - len(head) - 2
    if missing < 0:
        raise SystemExit(f"--size {size} is smaller than the message")
    cut = msg.index(b"\r\n") + 2  # after the request line
    return msg[:cut] + head + b"p" * missing + b"\r\n" + msg[cut:]


def message(kind: str, src: str, sport: int, dst: str, i: int) -> bytes:
    user, auth = "1001", None
    if kind == "bogus-auth":  # a nonce the registrar never issued
        user = "1002"
        auth = digest.authorization_header(user, "bogus", dst, f"bogus{i}", f"sip:{dst}",
                                           "REGISTER", qop=None)
    return build.register(dst, user=user, local=f"{src}:{sport}", call_id=f"{kind}-{i}@{src}",
                          cseq=2 if auth else 1, contacts=(), expires=None, authorization=auth,
                          branch=f"z9hG4bK{kind}{i}", rport=False, tag=f"t{i}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--sport", type=int, required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--kind", choices=["bogus-auth", "register"], required=True)
    ap.add_argument("--count", type=int, default=1_000_000)
    ap.add_argument("--interval", type=float, default=0.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--size", type=int, default=0)
    args = ap.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((args.src, args.sport))
    sock.setblocking(False)
    sent = answered = 0
    end = time.monotonic() + args.seconds
    while sent < args.count and time.monotonic() < end:
        msg = message(args.kind, args.src, args.sport, args.dst, sent)
        sock.sendto(padded(msg, args.size) if args.size else msg, (args.dst, 5060))
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
