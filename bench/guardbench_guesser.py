"""Password guessers for bench_guard.py's ban-latency test: digest REGISTER brute force.

Each guesser owns one source address (already on the client interface) and one account. It
sends REGISTER (again every 0.5 s until a challenge comes), takes the challenge from the 401,
then sends one REGISTER with a wrong password for the newest challenge it has every 1/rate
seconds, the way a real cracker paces itself, going on through lost guesses. Every guess reuses
the Call-ID and raises the CSeq, so the registrar's answer to CSeq 1 is the normal first
challenge and its answers to higher CSeqs are failures. A guesser stops after
``--max-guesses`` or once the registrar has answered nothing for ``--silence`` seconds (the
guard banned it).

For every 401 received it records the CSeq, the registrar's own send-time stamp (header
X-Fg-Ts, which bench_guard.py's Kamailio config adds: its clock read while building the
reply) and the receive time here. Prints one JSON object: source -> list of those records.

Usage: guardbench_guesser.py --server IP --sources A,B,... [--rate 20] [--start-spread S]
       [--sequential]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time

from floodguard.sip import build
from floodguard.sip.message import DigestChallenge, SipParseError, parse_message

UA = "bench-guesser/1.0"
RETRANSMIT = 0.5  # RFC 3261 timer A (T1)


class _Endpoint(asyncio.DatagramProtocol):
    """One guesser's UDP socket: records every 401 and keeps the newest challenge."""

    def __init__(self) -> None:
        self.records: list[dict[str, object]] = []
        self.challenge: DigestChallenge | None = None
        self.answers = 0

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        received = time.time()
        self.answers += 1
        if data[8:11] != b"401":
            return
        try:
            msg = parse_message(data)
        except SipParseError:
            return
        stamp = msg.header("X-Fg-Ts")
        self.records.append({"cseq": msg.cseq_num or 0,
                             "sent": float(stamp) if stamp else None, "received": received})
        # its opaque (the guard's proof token) is returned with its nonce
        self.challenge = build.challenge_of(msg) or self.challenge


def _register(server: str, src: str, port: int, user: str, call_id: str, cseq: int,
              challenge: DigestChallenge | None) -> bytes:
    """A REGISTER; answering `challenge` with a random (wrong) password when given (without
    qop: one nonce may serve several guesses, no nonce count to keep)."""
    auth = None if challenge is None else build.answer(
        challenge._replace(qop=None), user, os.urandom(8).hex(), "REGISTER", f"sip:{server}")
    return build.register(server, user=user, local=f"{src}:{port}", call_id=call_id, cseq=cseq,
                          expires=60, user_agent=UA, authorization=auth, tag=call_id[:10])


async def guesser(server: str, src: str, user: str, rate: float, delay: float,
                  max_guesses: int, silence: float) -> list[dict[str, object]]:
    """Guess at ``rate`` per second, always with the newest challenge received; stop after
    ``max_guesses`` or once nothing has been answered for ``silence`` seconds."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        _Endpoint, local_addr=(src, 0), remote_addr=(server, 5060))
    port = transport.get_extra_info("sockname")[1]
    call_id = f"{os.urandom(8).hex()}@{src}"
    period = 1.0 / rate
    await asyncio.sleep(delay)
    try:
        # a guess needs a challenge: the first REGISTER is sent again every RETRANSMIT seconds
        # until one comes, as any UA retransmits (a budget may drop the first few)
        first = _register(server, src, port, user, call_id, 1, None)
        deadline = loop.time() + 10.0
        while proto.challenge is None and loop.time() < deadline:
            transport.sendto(first)
            resend = min(deadline, loop.time() + RETRANSMIT)
            while proto.challenge is None and loop.time() < resend:
                await asyncio.sleep(0.002)
        if proto.challenge is None:
            return proto.records
        start = loop.time()
        last_answers, last_change = proto.answers, start
        for k in range(1, max_guesses + 1):
            transport.sendto(_register(server, src, port, user, call_id, k + 1,
                                       proto.challenge))
            await asyncio.sleep(max(0.0, start + k * period - loop.time()))
            if proto.answers != last_answers:
                last_answers, last_change = proto.answers, loop.time()
            elif loop.time() - last_change >= silence:
                break
        end = loop.time() + silence  # answers still on their way
        while loop.time() < end and loop.time() - last_change < silence:
            await asyncio.sleep(0.01)
            if proto.answers != last_answers:
                last_answers, last_change = proto.answers, loop.time()
    finally:
        transport.close()
    return proto.records


def _user(i: int, own: bool) -> str:
    """The account guesser ``i`` attacks: one of the registrar's ten (1001..1010), or with
    ``own`` one of its own that does not exist (the registrar challenges it the same way), so
    no account sees the several failing sources that make the guard protect it instead."""
    return f"{2001 + i}" if own else f"{1001 + i % 10}"


async def run(args: argparse.Namespace) -> dict[str, list[dict[str, object]]]:
    sources = args.sources.split(",")
    if args.sequential:
        out: dict[str, list[dict[str, object]]] = {}
        for i, src in enumerate(sources):
            out[src] = await guesser(args.server, src, _user(i, args.own_accounts), args.rate, 0.0,
                                     args.max_guesses, args.silence)
            await asyncio.sleep(args.pause)
        return out
    rng = random.Random(7)
    tasks = [
        guesser(args.server, src, _user(i, args.own_accounts), args.rate,
                rng.uniform(0.0, args.start_spread), args.max_guesses, args.silence)
        for i, src in enumerate(sources)
    ]
    results = await asyncio.gather(*tasks)
    return dict(zip(sources, results, strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", required=True)
    parser.add_argument("--sources", required=True, help="comma-separated source addresses")
    parser.add_argument("--rate", type=float, default=20.0, help="guesses per second each")
    parser.add_argument("--start-spread", type=float, default=0.05,
                        help="guessers start at random offsets within this many seconds")
    parser.add_argument("--max-guesses", type=int, default=12)
    parser.add_argument("--silence", type=float, default=0.5,
                        help="stop once nothing has been answered for this many seconds")
    parser.add_argument("--own-accounts", action="store_true",
                        help="each guesser its own (non-existent) account")
    parser.add_argument("--sequential", action="store_true",
                        help="one guesser after the other instead of all at once")
    parser.add_argument("--pause", type=float, default=0.2,
                        help="idle seconds between sequential guessers")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
