"""What the lab's guessing generators share (``attacks.py``, ``guessers.py``): UDP sockets, a
request/response ``Dialog`` with retransmission, digest answers to a challenge, and the word
list whose guess number ``CRACK_AT`` is the real password."""

from __future__ import annotations

import secrets
import select
import socket
import time
from collections.abc import Callable, Iterator

from floodguard.lab import sip
from floodguard.sip import build
from floodguard.sip.message import SipMessage, SipParseError, parse_message

COMMON_PASSWORDS = [
    "1234", "12345", "123456", "password", "admin", "0000", "1111", "secret", "letmein",
    "qwerty", "sip", "voip", "pass", "test", "1234567", "12345678", "abc123", "changeme",
    "welcome", "asterisk", "default", "111111", "654321", "000000", "pbx", "phone",
]
# The real password is guess number CRACK_AT: an unprotected registrar is cracked, a protected
# one bans the guesser long before.
CRACK_AT = 20


def udp_socket(src: str, port: int = 0, *, buffer: int = 4 << 20) -> socket.socket:
    """A non-blocking UDP socket bound to ``src:port`` with ``buffer``-sized buffers."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
    s.bind((src, port))
    s.setblocking(False)
    return s


def drain(sock: socket.socket, handle: Callable[[bytes], None] | None = None) -> int:
    """Read every datagram waiting on ``sock`` (each to ``handle``); how many there were."""
    got = 0
    while True:
        try:
            data = sock.recv(65535)
        except (BlockingIOError, InterruptedError):
            return got
        except OSError:
            continue
        got += 1
        if handle is not None:
            handle(data)


def parse(data: bytes) -> SipMessage | None:
    """The SIP message in ``data``, None when it is not one."""
    try:
        return parse_message(data)
    except SipParseError:
        return None


class Dialog:
    """One UDP socket doing request/response exchanges with retransmission."""

    def __init__(self, src: str, sport: int, server: str) -> None:
        self.src, self.sport, self.server = src, sport, server
        self.sock = udp_socket(src, sport, buffer=1 << 20)
        self.sent = 0
        self.answered = 0

    def exchange(self, data: bytes, call_id: str, cseq: int, wait: float = 1.0,
                 tries: int = 2) -> SipMessage | None:
        """Send, retransmit after ``wait``, return the final response (None: no answer)."""
        for _ in range(tries):
            self.sock.sendto(data, (self.server, sip.SIP_PORT))
            self.sent += 1
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([self.sock], [], [], left)
                if not ready:
                    break
                try:
                    raw = self.sock.recv(65535)
                except (BlockingIOError, InterruptedError):
                    continue
                msg = parse(raw)
                if (msg is None or msg.is_request or msg.call_id != call_id
                        or msg.cseq_num != cseq or (msg.status or 0) < 200):
                    continue
                self.answered += 1
                return msg
        return None


def authorization(msg: SipMessage, user: str, secret: str, server: str,
                  forged_nonce: bool = False) -> str | None:
    """Credentials answering the challenge in ``msg`` (None: it holds none)."""
    challenge = build.challenge_of(msg)
    if challenge is None:
        return None
    return build.answer(challenge, user, secret, "REGISTER", f"sip:{server}",
                        nonce=secrets.token_urlsafe(24) if forged_nonce else None)


def guesses(user: str, count: int) -> Iterator[str]:
    """A word list with the real password at position CRACK_AT."""
    words = [w for w in COMMON_PASSWORDS if w != sip.password(user)]
    i = 0
    while i < count:
        if i + 1 == CRACK_AT:
            yield sip.password(user)
        else:
            yield words[i % len(words)] + ("" if i < len(words) else str(i))
        i += 1
