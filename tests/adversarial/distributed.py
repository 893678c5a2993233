"""Distributed guessing of one account, with its owner registering meanwhile (issue #16 item 4).

Run in the attackers' namespace: ``--sources`` guessers, each on its own address, each sends
one wrong-password guess at the account every ``--gap`` seconds (staggered, so the account gets
sources/gap guesses per second), while the owner (on ``--owner``) registers with the right
password every ``--owner-gap`` seconds, retransmitting like a phone.

Prints JSON: {"owner": {"ok": n, "failed": n}, "guesses": [[t, status]]} where status is the
answer to a guess's credentials (None: no answer, also when its challenge never came).
"""

from __future__ import annotations

import argparse
import json
import threading
import time

from tests.adversarial.guesser import Client
from tests.adversarial.office import register_once


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--owner", required=True)
    ap.add_argument("--sources", required=True, help="comma-separated guesser addresses")
    ap.add_argument("--user", required=True)
    ap.add_argument("--duration", type=float, default=25.0)
    ap.add_argument("--gap", type=float, default=10.0)
    ap.add_argument("--owner-gap", type=float, default=2.0)
    args = ap.parse_args()
    sources = args.sources.split(",")
    owner = Client(args.owner, args.server, args.user, "udp", 5400)
    first = register_once(owner, f"secret{args.user}")  # the owner's pair exists before
    start = time.monotonic()
    end = start + args.duration
    guesses: list[list[float | int | None]] = []
    lock = threading.Lock()

    def guesser(i: int, src: str) -> None:
        client = Client(src, args.server, args.user, "udp", 5500)
        time.sleep(i * args.gap / len(sources))
        n = 0
        while time.monotonic() < end:
            status = client.guess(f"guess-{i}-{n}") if client.ask_challenge() else None
            with lock:
                guesses.append([round(time.monotonic() - start, 3), status])
            n += 1
            # the next guess, or the end of the run when that comes first
            time.sleep(max(0.0, min(end, start + i * args.gap / len(sources) + n * args.gap)
                           - time.monotonic()))

    threads = [threading.Thread(target=guesser, args=(i, src)) for i, src in enumerate(sources)]
    for thread in threads:
        thread.start()
    results = [first]
    while time.monotonic() < end:
        time.sleep(args.owner_gap)
        results.append(register_once(owner, f"secret{args.user}"))
    for thread in threads:
        thread.join()
    print(json.dumps({"owner": {"ok": results.count(200), "failed": len(results)
                                - results.count(200), "statuses": results},
                      "guesses": sorted(guesses)}))


if __name__ == "__main__":
    main()
