"""A password guesser that alternates UDP and TCP from one address (a script, not a test).

    twoworkers_guesser.py --src IP --server IP [--user 1001] [--guesses 12] [--gap 0.25]

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
import time

from floodguard.sip import digest
from floodguard.sip.message import SipMessage, parse_message

WAIT = 1.0
_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.IGNORECASE | re.MULTILINE)


class Client:
    """One REGISTER dialog per transport from src, with the latest challenge it received."""

    def __init__(self, src: str, server: str, user: str, transport: str, sport: int) -> None:
        self.src, self.server, self.user, self.transport, self.sport = (
            src, server, user, transport, sport)
        self.call_id = f"tw-{transport}-{time.time_ns()}@{src}"
        self.cseq = 0
        self.challenge: SipMessage | None = None
        self.buffer = b""
        if transport == "udp":
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.sock.bind((src, sport))
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # a second run from the same port must not wait for the first one's TIME_WAIT
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((src, sport))
            self.sock.settimeout(3)
            self.sock.connect((server, 5060))
        self.sock.settimeout(WAIT)

    def register(self, authorization: str | None) -> bytes:
        self.cseq += 1
        via = "TCP" if self.transport == "tcp" else "UDP"
        lines = [
            f"REGISTER sip:{self.server} SIP/2.0",
            f"Via: SIP/2.0/{via} {self.src}:{self.sport};branch=z9hG4bK-{self.call_id}-"
            f"{self.cseq};rport",
            "Max-Forwards: 70",
            f"From: <sip:{self.user}@{self.server}>;tag=tw{self.sport}",
            f"To: <sip:{self.user}@{self.server}>",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq} REGISTER",
            f"Contact: <sip:{self.user}@{self.src}:{self.sport};transport={self.transport}>",
            "Expires: 3600",
            "User-Agent: twoworkers-guesser",
        ]
        if authorization is not None:
            lines.append(f"Authorization: {authorization}")
        lines += ["Content-Length: 0", "", ""]
        return "\r\n".join(lines).encode()

    def send(self, data: bytes) -> None:
        try:
            if self.transport == "udp":
                self.sock.sendto(data, (self.server, 5060))
            else:
                self.sock.sendall(data)
        except OSError:
            pass  # a banned source's connection may be gone: no answer then

    def receive(self) -> SipMessage | None:
        """The final response to our REGISTER (provisional ones skipped), or None after WAIT."""
        deadline = time.monotonic() + WAIT
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

    def ask_challenge(self) -> bool:
        self.send(self.register(None))
        msg = self.receive()
        if msg is not None and msg.status == 401 and msg.challenges:
            self.challenge = msg
            return True
        return False

    def guess(self, password: str) -> int | None:
        """Send one wrong-password REGISTER answering the latest challenge; the status or None."""
        assert self.challenge is not None
        option = self.challenge.challenges[0]
        qop = "auth" if option.qop and "auth" in option.qop.lower().split(",") else None
        uri = f"sip:{self.server}"
        auth = digest.authorization_header(
            self.user, password, option.realm or "", option.nonce or "", uri, "REGISTER",
            algorithm=(option.algorithm or "MD5").upper(), qop=qop, nc=1,
            opaque=option.opaque)
        self.send(self.register(auth))
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
    args = ap.parse_args()
    clients = {"udp": Client(args.src, args.server, args.user, "udp", 5091),
               "tcp": Client(args.src, args.server, args.user, "tcp", 5092)}
    challenges = {name: int(client.ask_challenge()) for name, client in clients.items()}
    if not all(challenges.values()):
        raise SystemExit(f"no first challenge: {challenges}")
    guesses: list[dict[str, object]] = []
    silent_run = 0
    for i in range(args.guesses):
        time.sleep(args.gap)
        name = "udp" if i % 2 == 0 else "tcp"
        status = clients[name].guess(f"wrong-{i}")
        guesses.append({"transport": name, "status": status})
        silent_run = silent_run + 1 if status is None else 0
        if silent_run >= 2:
            break
    wrong = [g for g in guesses if g["status"] in (401, 403)]
    print(json.dumps({
        "challenges": challenges, "guesses": guesses, "wrong": len(wrong),
        "wrong_udp": sum(g["transport"] == "udp" for g in wrong),
        "wrong_tcp": sum(g["transport"] == "tcp" for g in wrong),
        "silent": sum(g["status"] is None for g in guesses)}))


if __name__ == "__main__":
    main()
