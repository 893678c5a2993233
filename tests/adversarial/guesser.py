"""A password guesser from one address (a script, not a test), shared by the attack tests.

    guesser.py --src IP --server IP [--user 1001] [--guesses 12] [--gap 0.25]
               [--transports udp,tcp] [--split] [--pipeline N] [--mss N] [--call-id-pad N]

--transports: the guesses take turns over these (default: alternate UDP and TCP). TCP tricks
that used to escape a guard judging segment by segment: --split writes each REGISTER in two
send() calls; --pipeline N sends N guesses in one write, then reads the N answers; --mss N
sets a small MSS (536 splits every answer) and --call-id-pad N makes the Call-ID that long.

It plays by the rules a real client follows, so every guess is a *proven* failure: it first gets
one challenge over UDP and one over its TCP connection (first challenges never count), then
sends ``--guesses`` REGISTERs with a wrong password, even ones over UDP and odd ones over TCP.
Each guess answers the latest challenge received on its own transport: nonce, realm, qop and
the opaque echoed unchanged (over UDP that opaque carries the guard's proof token). A 401 or
403 to a guess is a wrong-password answer; a 403 carries no challenge, so a fresh one is asked
for. Once the source is banned nothing answers: it stops after two silent guesses in a row.

Prints JSON: {"challenges": {"udp": n, "tcp": n}, "guesses": [{"transport", "status"}],
"wrong": n, "wrong_udp": n, "wrong_tcp": n, "silent": n}.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import ssl
import time

from floodguard.sip import build
from floodguard.sip.message import SipMessage, parse_message

WAIT = 1.0
# A phone's UDP retransmissions (RFC 3261 Timer E from T1 = 0.5 s, doubling): a datagram lost
# or late on a busy host is sent again, as every real phone does.
RETRANSMIT = (0.5, 1.0, 2.0)
_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.IGNORECASE | re.MULTILINE)


class Client:
    """One REGISTER dialog per transport from src, with the latest challenge it received."""

    def __init__(self, src: str, server: str, user: str, transport: str, sport: int,
                 split: bool = False, mss: int = 0, pad: int = 0) -> None:
        self.src, self.server, self.user, self.transport, self.sport = (
            src, server, user, transport, sport)
        self.split = split
        self.family = socket.AF_INET6 if ":" in src else socket.AF_INET
        # hosts as a SIP URI writes them (IPv6 in brackets)
        self.host = f"[{src}]" if ":" in src else src
        self.target = f"[{server}]" if ":" in server else server
        self.call_id = f"tw-{transport}-{time.time_ns()}{'x' * pad}@{src}"
        self.cseq = 0
        self.challenge: SipMessage | None = None
        self.buffer = b""
        if transport == "udp":
            self.sock = socket.socket(self.family, socket.SOCK_DGRAM)
            self.sock.bind((src, sport))
        else:
            self.sock = socket.socket(self.family, socket.SOCK_STREAM)
            # a second run from the same port must not wait for the first one's TIME_WAIT
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if mss:
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
            self.sock.bind((src, sport))
            self.sock.settimeout(3)
            self.sock.connect((server, 5061 if transport == "tls" else 5060))
            if transport == "tls":
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                self.sock = context.wrap_socket(self.sock)
        self.sock.settimeout(WAIT)

    def register(self, authorization: str | None) -> bytes:
        self.cseq += 1
        local = f"{self.host}:{self.sport}"
        return build.register(
            self.target, user=self.user, local=local, call_id=self.call_id, cseq=self.cseq,
            contacts=[f"<sip:{self.user}@{local};transport={self.transport}>"],
            user_agent="twoworkers-guesser", authorization=authorization,
            transport=self.transport, branch=f"z9hG4bK-{self.call_id}-{self.cseq}",
            tag=f"tw{self.sport}")

    def send(self, data: bytes) -> None:
        try:
            if self.transport == "udp":
                self.sock.sendto(data, (self.server, 5060))
            elif self.split:
                half = len(data) // 2
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sock.sendall(data[:half])
                time.sleep(0.05)
                self.sock.sendall(data[half:])
            else:
                self.sock.sendall(data)
        except OSError:
            pass  # a banned source's connection may be gone: no answer then

    def receive(self, wait: float = WAIT) -> SipMessage | None:
        """The final response to our REGISTER (provisional ones skipped), or None after
        `wait` seconds."""
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65535) if self.transport == "udp" else self._frame()
            except OSError:
                return None
            if data is None:
                continue
            msg = parse_message(data)
            if msg.status is not None and msg.status >= 200 and msg.cseq_num == self.cseq:
                return msg

    def _frame(self) -> bytes | None:
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65535)
            if not chunk:
                raise OSError("connection closed")
            self.buffer += chunk
        head, _, rest = self.buffer.partition(b"\r\n\r\n")
        match = _LENGTH.search(head)
        length = int(match.group(1)) if match else 0
        while len(rest) < length:
            chunk = self.sock.recv(65535)
            if not chunk:
                raise OSError("connection closed")
            rest += chunk
        self.buffer = rest[length:]
        return head + b"\r\n\r\n" + rest[:length]

    def transact(self, data: bytes, tries: int = len(RETRANSMIT)) -> SipMessage | None:
        """Send a request, retransmitted over UDP as a phone does (``tries`` sends), until a
        final response."""
        for wait in RETRANSMIT[:tries] if self.transport == "udp" else (WAIT,):
            self.send(data)
            msg = self.receive(wait)
            if msg is not None:
                return msg
        return None

    def ask_challenge(self, retransmit: bool = False, tries: int = len(RETRANSMIT)) -> bool:
        """A REGISTER without credentials; True when a challenge came (`retransmit`: as a
        phone does, for a first request that must not be lost on a busy host, ``tries``
        sends)."""
        if retransmit:
            msg = self.transact(self.register(None), tries)
        else:
            self.send(self.register(None))
            msg = self.receive()
        if msg is not None and msg.status == 401 and msg.challenges:
            self.challenge = msg
            return True
        return False

    def answer(self, password: str, nc: int = 1) -> bytes:
        """A REGISTER answering the latest challenge with this password."""
        assert self.challenge is not None
        return self.register(build.authorize(self.challenge, self.user, password, "REGISTER",
                                             f"sip:{self.target}", nc=nc))

    def pipeline(self, passwords: list[str]) -> list[int | None]:
        """Several guesses in one write; the status of each answer, in order."""
        data = b"".join(self.answer(p, nc=i + 1) for i, p in enumerate(passwords))
        first = self.cseq - len(passwords) + 1
        self.send(data)
        statuses: dict[int, int] = {}
        deadline = time.monotonic() + WAIT * 2
        while len(statuses) < len(passwords) and time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                frame = self._frame()
            except OSError:
                break
            if frame is None:
                continue
            msg = parse_message(frame)
            if msg.status and msg.status >= 200 and msg.cseq_num is not None:
                statuses[msg.cseq_num] = msg.status
                if msg.status == 401 and msg.challenges:
                    self.challenge = msg
        return [statuses.get(first + i) for i in range(len(passwords))]

    def guess(self, password: str) -> int | None:
        """Send one wrong-password REGISTER answering the latest challenge; the status or None."""
        self.send(self.answer(password))
        msg = self.receive()
        if msg is None:
            return None
        if msg.status == 401 and msg.challenges:
            self.challenge = msg
        elif msg.status == 403:
            self.ask_challenge()
        return msg.status


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--user", default="1001")
    ap.add_argument("--guesses", type=int, default=12)
    ap.add_argument("--gap", type=float, default=0.25)
    ap.add_argument("--transports", default="udp,tcp")
    ap.add_argument("--split", action="store_true")
    ap.add_argument("--pipeline", type=int, default=1)
    ap.add_argument("--mss", type=int, default=0)
    ap.add_argument("--call-id-pad", type=int, default=0)
    ap.add_argument("--challenge-tries", type=int, default=len(RETRANSMIT),
                    choices=range(1, len(RETRANSMIT) + 1),
                    help="UDP sends of the first REGISTER (fewer: give up sooner on a source "
                         "expected to be dropped)")
    args = ap.parse_args()
    order = args.transports.split(",")
    ports = {"udp": 5091, "tcp": 5092, "tls": 5093}
    clients = {name: Client(args.src, args.server, args.user, name, ports[name],
                            split=args.split, mss=args.mss, pad=args.call_id_pad)
               for name in dict.fromkeys(order)}
    challenges = {name: int(client.ask_challenge(retransmit=True, tries=args.challenge_tries))
                  for name, client in clients.items()}
    if not all(challenges.values()):
        raise SystemExit(f"no first challenge: {challenges}")
    guesses: list[dict[str, object]] = []
    silent_run = 0
    i = 0
    while i < args.guesses and silent_run < 2:
        time.sleep(args.gap)
        name = order[len(guesses) % len(order)] if args.pipeline == 1 else order[0]
        if args.pipeline > 1 and name == "tcp":
            batch = [f"wrong-{i + k}" for k in range(min(args.pipeline, args.guesses - i))]
            statuses = clients[name].pipeline(batch)
        else:
            batch = [f"wrong-{i}"]
            statuses = [clients[name].guess(batch[0])]
        for status in statuses:
            guesses.append({"transport": name, "status": status})
            silent_run = silent_run + 1 if status is None else 0
        i += len(batch)
    wrong = [g for g in guesses if g["status"] in (401, 403)]
    print(json.dumps({
        "challenges": challenges, "guesses": guesses, "wrong": len(wrong),
        "wrong_udp": sum(g["transport"] == "udp" for g in wrong),
        "wrong_tcp": sum(g["transport"] == "tcp" for g in wrong),
        "wrong_tls": sum(g["transport"] == "tls" for g in wrong),
        "silent": sum(g["status"] is None for g in guesses)}))


if __name__ == "__main__":
    main()
