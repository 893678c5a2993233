"""Legitimate phones: one asyncio UDP socket per address, digest auth, refresh, OPTIONS answers.

    python -m floodguard.lab.phones --server IP --phones N [--storm M] [options]

runs inside the phones' namespace. Phone ``i`` sends from ``topology.phone_address(i)`` port 5060
as account ``sip.phone_user(i)``. With ``--office`` it runs in the office's namespace instead:
the phones' accounts start at ``--first``, and the n-th one sends from the office's private
``topology.office_phone_address(n)``, behind the office's NAT. Each registration is timed
from its first REGISTER to the 200 OK, across the digest challenge and RFC 3261
retransmissions (T1 = 0.5 s, doubling, capped at T2 = 4 s); it fails when no 200 has come
within ``--timeout`` seconds, or on any other final answer. Refreshes reuse the cached nonce
(nonce-count + 1), as phones do.

At start every phone registers once, spread over ``--warmup`` seconds (so the guard learns them
as known-good); then ``{"event": "warm", ...}`` is printed. The first ``--phones`` phones then
refresh every ``--refresh`` seconds (±30 % jitter); the last ``--storm`` phones stay quiet until
the ``storm`` command. ``--fresh N`` more phones (accounts from ``--fresh-first`` on) never
register before the ``fresh`` command. Commands on stdin, one per line:

- ``storm``: every storm phone reboots (new Call-ID, no cached nonce) and registers at once;
- ``fresh``: every fresh phone registers at once, and each one that fails tries again (after
  1 s when refused, at once after a timeout) until it is registered or ``--fresh-limit`` seconds
  have passed; then ``{"event": "fresh", "phones": N, "registered": n, "completed_s": seconds
  until the last one was registered (null: not all were), "attempts": n, "outcomes": {...}}``
  is printed. Fresh registrations are not in the ``result``'s attempts;
- ``stop``: stop starting registrations, let the ones in flight finish, print
  ``{"event": "result", "attempts": [[start, latency or null, outcome, phone], ...],
  "options_answered": n}`` (start in wall-clock seconds), and exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import resource
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from floodguard.lab import sip
from floodguard.lab.topology import office_phone_address, phone_address
from floodguard.sip import build
from floodguard.sip.message import DigestChallenge, SipMessage, SipParseError, parse_message

T1 = 0.5
T2 = 4.0
ALLOW = "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS"  # in the 200 OK to an OPTIONS


@dataclass
class Attempt:
    """One registration: when it started, how long it took (None: failed), its outcome."""

    start: float
    latency: float | None
    outcome: str
    phone: int

    def row(self) -> list[Any]:
        return [round(self.start, 4), None if self.latency is None else round(self.latency, 5),
                self.outcome, self.phone]


@dataclass(eq=False)
class Phone(asyncio.DatagramProtocol):
    """One phone: its socket, its registration dialog and its cached credentials."""

    index: int
    ip: str
    server: str
    expires: int
    timeout: float
    user: str = ""
    call_id: str = ""
    cseq: int = 0
    challenge: DigestChallenge | None = None
    nc: int = 0
    transport: asyncio.DatagramTransport | None = None
    waiting: dict[int, asyncio.Future[SipMessage]] = field(default_factory=dict)
    options_answered: int = 0

    def __post_init__(self) -> None:
        self.user = sip.phone_user(self.index)
        self.reboot()

    def reboot(self) -> None:
        """Forget the dialog and the cached nonce, as a phone that lost power does."""
        self.call_id = f"{secrets.token_hex(8)}@{self.ip}"
        self.cseq = 0
        self.challenge = None
        self.nc = 0

    # --- asyncio protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = parse_message(data)
        except SipParseError:
            return
        if msg.is_request:
            if msg.method == "OPTIONS" and self.transport is not None:
                reply = build.reply(data, headers=[ALLOW])
                if reply is not None:
                    self.transport.sendto(reply, addr)
                    self.options_answered += 1
            return
        if msg.call_id != self.call_id or msg.cseq_method != "REGISTER":
            return
        if (msg.status or 0) < 200 or msg.cseq_num is None:
            return
        fut = self.waiting.get(msg.cseq_num)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def error_received(self, exc: Exception) -> None:  # ICMP errors: retransmission handles it
        pass

    # --- registration

    def _authorization(self) -> str | None:
        ch = self.challenge
        if ch is None or not ch.nonce:
            return None
        self.nc += 1
        return build.answer(ch, self.user, sip.password(self.user), "REGISTER",
                            f"sip:{self.server}", nc=self.nc)

    async def _transaction(self, deadline: float) -> SipMessage | None:
        """Send one REGISTER (new CSeq), retransmitting until a final answer or the deadline."""
        loop = asyncio.get_running_loop()
        self.cseq += 1
        cseq = self.cseq
        data = build.register(self.server, user=self.user, local=f"{self.ip}:{sip.SIP_PORT}",
                              call_id=self.call_id, cseq=cseq, expires=self.expires,
                              user_agent=sip.PHONE_AGENT, authorization=self._authorization(),
                              tag=f"t{self.index}")
        fut: asyncio.Future[SipMessage] = loop.create_future()
        self.waiting[cseq] = fut
        interval = T1
        try:
            while True:
                if self.transport is not None:
                    self.transport.sendto(data, (self.server, sip.SIP_PORT))
                left = deadline - loop.time()
                if left <= 0:
                    return None
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), min(interval, left))
                except TimeoutError:
                    interval = min(interval * 2, T2)
        finally:
            self.waiting.pop(cseq, None)

    async def register(self) -> Attempt:
        """One registration, challenges answered; its outcome and latency."""
        loop = asyncio.get_running_loop()
        wall, start = time.time(), loop.time()
        deadline = start + self.timeout
        for _ in range(3):  # cached nonce may be stale; then one fresh challenge
            reply = await self._transaction(deadline)
            if reply is None:
                return Attempt(wall, None, "timeout", self.index)
            status = reply.status or 0
            if status in (401, 407):
                challenge = next((c for c in reply.challenges if c.nonce), None)
                if challenge is None:
                    break
                self.challenge, self.nc = challenge, 0
                continue
            if 200 <= status < 300:
                return Attempt(wall, loop.time() - start, "ok", self.index)
            return Attempt(wall, None, str(status), self.index)
        return Attempt(wall, None, "401", self.index)


class Fleet:
    """All phones, their schedules and the record of every registration."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.phones: list[Phone] = []
        self.attempts: list[Attempt] = []
        self.stopping = False
        self.in_flight: set[asyncio.Task[Attempt]] = set()
        self.fresh_phones: list[Phone] = []

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        total = self.args.phones + self.args.storm
        start = self.args.first
        first = self.args.fresh_first if self.args.fresh_first is not None else start + total
        indexes = [*range(start, start + total), *range(first, first + self.args.fresh)]
        for n, index in enumerate(indexes):
            steady = n < self.args.phones
            ip = office_phone_address(n) if self.args.office else phone_address(index)
            phone = Phone(index, ip, self.args.server,
                          self.args.expires if steady else 3600, self.args.timeout)
            await loop.create_datagram_endpoint(lambda p=phone: p,  # type: ignore[misc]
                                                local_addr=(phone.ip, sip.SIP_PORT))
            (self.phones if n < total else self.fresh_phones).append(phone)

    async def attempt(self, phone: Phone) -> Attempt:
        task = asyncio.ensure_future(phone.register())
        self.in_flight.add(task)
        try:
            result = await task
        finally:
            self.in_flight.discard(task)
        self.attempts.append(result)
        return result

    async def warmup(self) -> None:
        spread = self.args.warmup / max(1, len(self.phones))

        async def one(phone: Phone, delay: float) -> Attempt:
            await asyncio.sleep(delay)
            result = await self.attempt(phone)
            if result.outcome != "ok":  # warm-up retries: the measured run starts registered
                result = await self.attempt(phone)
            return result

        results = await asyncio.gather(*(one(p, i * spread) for i, p in
                                         enumerate(self.phones)))
        ok = sum(r.outcome == "ok" for r in results)
        self.attempts.clear()
        emit({"event": "warm", "ok": ok, "failed": len(results) - ok})

    async def refresh_loop(self, phone: Phone) -> None:
        rng = random.Random(phone.index)
        await asyncio.sleep(rng.uniform(0, self.args.refresh))
        while not self.stopping:
            await self.attempt(phone)
            await asyncio.sleep(self.args.refresh * rng.uniform(0.7, 1.3))

    async def storm(self) -> None:
        phones = self.phones[self.args.phones:]
        for phone in phones:
            phone.reboot()
        await asyncio.gather(*(self.attempt(p) for p in phones))

    async def fresh(self) -> None:
        """The fresh start: every fresh phone registers at once, retrying until registered."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        give_up = start + self.args.fresh_limit
        outcomes: dict[str, int] = {}
        done: list[float] = []

        async def one(phone: Phone) -> None:
            while loop.time() < give_up:
                result = await phone.register()
                outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
                if result.outcome == "ok":
                    done.append(loop.time() - start)
                    return
                phone.reboot()
                if result.outcome != "timeout":
                    await asyncio.sleep(1.0)

        await asyncio.gather(*(one(p) for p in self.fresh_phones))
        emit({"event": "fresh", "phones": len(self.fresh_phones), "registered": len(done),
              "completed_s": round(max(done), 3) if len(done) == len(self.fresh_phones)
              and done else None, "gave_up_s": self.args.fresh_limit,
              "attempts": sum(outcomes.values()), "outcomes": outcomes,
              "registered_at": sorted(round(t, 2) for t in done)})

    async def finish(self) -> None:
        self.stopping = True
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=self.args.timeout + 1)
        emit({"event": "result", "attempts": [a.row() for a in self.attempts],
              "options_answered": sum(p.options_answered for p in self.phones)})


def emit(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def _commands() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def amain(args: argparse.Namespace) -> None:
    fleet = Fleet(args)
    await fleet.open()
    reader = await _commands()
    emit({"event": "ready", "phones": len(fleet.phones)})
    await fleet.warmup()
    loops = [asyncio.ensure_future(fleet.refresh_loop(p)) for p in fleet.phones[:args.phones]]
    storms: list[asyncio.Task[None]] = []
    while True:
        line = await reader.readline()
        command = line.decode().strip()
        if command == "storm":
            storms.append(asyncio.ensure_future(fleet.storm()))
        elif command == "fresh":
            storms.append(asyncio.ensure_future(fleet.fresh()))
        elif command in ("stop", ""):
            break
    await fleet.finish()
    for task in loops + storms:
        task.cancel()
    for task in loops + storms:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m floodguard.lab.phones")
    ap.add_argument("--server", required=True)
    ap.add_argument("--phones", type=int, default=60, help="phones that keep refreshing")
    ap.add_argument("--first", type=int, default=0, help="account index of the first phone")
    ap.add_argument("--office", action="store_true",
                    help="the phones are the office's, on its private addresses")
    ap.add_argument("--storm", type=int, default=0, help="extra phones for the storm command")
    ap.add_argument("--fresh", type=int, default=0,
                    help="phones that register only on the fresh command")
    ap.add_argument("--fresh-first", type=int, default=None,
                    help="index of the first fresh phone (default: after the storm phones)")
    ap.add_argument("--fresh-limit", type=float, default=60.0,
                    help="seconds the fresh phones keep trying")
    ap.add_argument("--refresh", type=float, default=3.0, help="seconds between refreshes")
    ap.add_argument("--expires", type=int, default=300)
    ap.add_argument("--timeout", type=float, default=4.0,
                    help="a registration fails without a 200 OK within this many seconds")
    ap.add_argument("--warmup", type=float, default=3.0,
                    help="seconds over which the first registrations are spread")
    args = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.phones + args.storm + args.fresh + 64
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))
    asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
