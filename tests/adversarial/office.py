"""An office behind one NAT address (a script, not a test): phones that register fine and one
desk phone still holding an old password, all from one source address.

    office.py --src IP --server IP --phones 1001,1002 --stale 1010 [--duration 40]
              [--phone-gap 4] [--stale-gap 0.5] [--guesser-aors 100 --guesser-gap 0.5]
              [--phone-srcs IP,IP] [--guesser-src IP]

First every phone registers once (so the address holds known-good pairs). Then, for
``--duration`` seconds, each phone re-registers every ``--phone-gap`` seconds (REGISTER -> 401
-> REGISTER with the right password -> 200) while the stale phone keeps answering its latest
challenge with a wrong password every ``--stale-gap`` seconds, as a real phone retries. Each
phone and the stale one use their own UDP port and Call-ID, like phones behind a NAT. Every
answer the stale phone gets is logged with its time; a request that gets no answer within a
second is ``null`` (its endpoint is suspended: the guard drops it).

With ``--guesser-aors N`` a password guesser on the same address sprays N accounts (g0, g1, ...),
one wrong guess every ``--guesser-gap`` seconds; each guess is logged like the stale phone's.

An IPv6 office has no NAT: ``--phone-srcs`` gives each phone its own address (of the office's
/64) and ``--guesser-src`` the guesser's; both default to ``--src``.

Prints JSON: {"phones": {"ok": n, "failed": n, "statuses": {...}}, "stale": [[t, status]],
"guesser": [[t, status]]}.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter

from tests.adversarial.guesser import Client


def register_once(client: Client, password: str) -> int | None:
    """One full registration: challenge, then the answer; the final status (None: silence)."""
    challenge = client.transact(client.register(None))
    if challenge is None or challenge.status != 401 or not challenge.challenges:
        return None
    client.challenge = challenge
    msg = client.transact(client.answer(password))
    return None if msg is None else msg.status


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--phones", required=True)
    ap.add_argument("--stale", required=True)
    ap.add_argument("--duration", type=float, default=40.0)
    ap.add_argument("--phone-gap", type=float, default=4.0)
    ap.add_argument("--stale-gap", type=float, default=0.5)
    ap.add_argument("--guesser-aors", type=int, default=0,
                    help="a guesser on the same address sprays this many AORs (0: none)")
    ap.add_argument("--guesser-gap", type=float, default=0.5)
    ap.add_argument("--phone-srcs", default="", help="each phone's own address (default --src)")
    ap.add_argument("--guesser-src", default="", help="the guesser's address (default --src)")
    args = ap.parse_args()
    users = args.phones.split(",")
    srcs = args.phone_srcs.split(",") if args.phone_srcs else [args.src] * len(users)
    phones = [Client(srcs[i], args.server, user, "udp", 5200 + i)
              for i, user in enumerate(users)]
    statuses: Counter[str] = Counter()
    for phone in phones:  # the office is up: known-good pairs for its address
        statuses[str(register_once(phone, f"secret{phone.user}"))] += 1
    start = time.monotonic()
    end = start + args.duration
    stale_log: list[list[float | int | None]] = []

    def stale_phone() -> None:
        client = Client(args.src, args.server, args.stale, "udp", 5300)
        last: int | None = None
        while time.monotonic() < end:
            if client.challenge is None or last is None:
                # a fresh registration attempt: its first challenge is never a failure
                last = 401 if client.ask_challenge() else None
                if last is None:
                    stale_log.append([round(time.monotonic() - start, 3), None])
                    time.sleep(args.stale_gap)
                    continue
            time.sleep(args.stale_gap)
            last = client.guess("an-old-password")
            stale_log.append([round(time.monotonic() - start, 3), last])

    guesser_log: list[list[float | int | None]] = []

    def guesser() -> None:
        clients: dict[int, Client] = {}
        n = 0
        while time.monotonic() < end:
            i = n % args.guesser_aors
            if i not in clients:
                clients[i] = Client(args.guesser_src or args.src, args.server, f"g{i}", "udp",
                                    5600 + i)
            client = clients[i]
            status = client.guess("a-guess") if client.ask_challenge() else None
            guesser_log.append([round(time.monotonic() - start, 3), status])
            n += 1
            time.sleep(args.guesser_gap)

    threads = [threading.Thread(target=stale_phone)]
    if args.guesser_aors:
        threads.append(threading.Thread(target=guesser))
    for thread in threads:
        thread.start()
    gap = args.phone_gap / len(phones)
    i = 0
    while time.monotonic() < end:
        phone = phones[i % len(phones)]
        statuses[str(register_once(phone, f"secret{phone.user}"))] += 1
        i += 1
        time.sleep(gap)
    for thread in threads:
        thread.join()
    print(json.dumps({
        "guesser": guesser_log,
        "phones": {"ok": statuses["200"], "failed": sum(statuses.values()) - statuses["200"],
                   "statuses": dict(statuses)},
        "stale": stale_log}))


if __name__ == "__main__":
    main()
