"""One TCP or TLS connection of the registrar: framing, size caps and output flow control.

Messages are framed by Content-Length (mandatory on streams, RFC 3261 §18.3); RFC 5626 CRLF
keep-alive pings are answered. A connection that sends something unparseable is closed (the
framing is lost then); one whose unanswered partial message grows past the cap is aborted.

Output is bounded per connection: once a peer leaves more than `WRITE_HIGH` bytes of answers
unread, the connection stops reading (and so stops producing answers) until it drains below
`WRITE_LOW`; a peer that stays blocked for `tcp_write_timeout` seconds, or whose unsent output
passes `WRITE_HARD_CAP`, is aborted, which frees its buffers at once (a plain close would keep
them until the peer reads). Each source (an IPv4 address, an IPv6 /64) may hold at most
`max_connections_per_source` of the `max_connections` slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from typing import TYPE_CHECKING

from floodguard import addr
from floodguard.registrar.core import Source
from floodguard.sip.message import MAX_MESSAGE, SipParseError, parse_message

if TYPE_CHECKING:
    from floodguard.registrar.server import RegistrarServer

PARTIAL_MESSAGE_TIMEOUT = 30.0
_STREAM_CAP = MAX_MESSAGE + 4096
# Output flow control per connection (bytes of answers the peer has not read yet).
WRITE_HIGH = 64 * 1024
WRITE_LOW = 16 * 1024
WRITE_HARD_CAP = 1024 * 1024
# Input held while output is blocked: at most what one read returned when reading paused.
_BLOCKED_INPUT_CAP = 1024 * 1024
# Kernel send buffer per connection (the kernel doubles it): SIP answers are small, and the
# default autotuning lets a peer that never reads pin megabytes of kernel memory per socket.
_SOCKET_SNDBUF = 128 * 1024


def source_key(ip: str, v6_prefix: int = 64) -> str:
    """What a per-source limit counts: an IPv4 address (also written ``::ffff:a.b.c.d``), the
    /64 (limits.ipv6_prefix) of an IPv6 address (one subscriber's LAN: a host can use every
    address in it)."""
    try:
        return addr.source_key(ip, v6_prefix)
    except ValueError:
        return ip  # not something the kernel would hand us; count it as it is


class StreamProtocol(asyncio.Protocol):
    """One TCP or TLS connection: Content-Length framing, size caps, output flow control."""

    def __init__(self, server: RegistrarServer, transport_name: str, local: str) -> None:
        self.server = server
        self.name = transport_name
        self.local = local
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.source = ""
        self.counted = False
        self.buffer = b""
        self.last_activity = time.monotonic()
        self.partial_since: float | None = None
        self.blocked_since: float | None = None  # output over WRITE_HIGH, reading paused
        self.closing_since: float | None = None  # closed, waiting for the peer to drain

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername") or ("", 0)
        self.peer = (str(peer[0]), int(peer[1]))
        self.source = source_key(self.peer[0], self.server.settings.ipv6_prefix)
        if not self.server.admit(self):
            transport.abort()  # type: ignore[attr-defined]
            return
        self.counted = True
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_SNDBUF)
        self.transport.set_write_buffer_limits(high=WRITE_HIGH, low=WRITE_LOW)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.counted:
            self.counted = False
            self.server.release(self)
        self.transport = None
        self.buffer = b""

    # --- output ------------------------------------------------------------------------------

    def pause_writing(self) -> None:
        self.blocked_since = time.monotonic()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.blocked_since = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self.buffer:  # messages read before output blocked, not yet answered
            self._process(self.buffer, time.monotonic())
        if self.blocked_since is None and self.transport is not None \
                and not self.transport.is_closing():
            self.transport.resume_reading()

    def write(self, data: bytes) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(data)
        if transport.get_write_buffer_size() > WRITE_HARD_CAP:
            self.abort("unsent output over the hard cap")
            return False
        return True

    def close(self) -> None:
        """Close after the pending output is sent; `expire` aborts if the peer never reads it."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
            self.closing_since = time.monotonic()

    def abort(self, why: str) -> None:
        """Drop the connection and its buffers now."""
        if self.transport is not None:
            self.server.note_drop(self, why)
            self.transport.abort()
        self.buffer = b""

    def expire(self, now: float, idle: float, write_timeout: float) -> None:
        """Housekeeping: drop what has waited too long (idle, partial, undrained output)."""
        if self.transport is None:
            return
        since = self.closing_since if self.closing_since is not None else self.blocked_since
        if since is not None:
            if now - since > write_timeout:
                self.abort("peer did not read its answers")
        elif now - self.last_activity > idle or (
                self.partial_since is not None and now - self.partial_since
                > PARTIAL_MESSAGE_TIMEOUT):
            self.close()

    # --- input ---------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.last_activity = now
        if self.transport is None or self.transport.is_closing():
            return
        self._process(self.buffer + data if self.buffer else data, now)

    def _process(self, buffer: bytes, now: float) -> None:
        try:
            buffer = self._consume(buffer)
        except Exception:
            self.server.errors("unexpected error handling a stream message")
            self.abort("internal error")
            return
        if self.transport is None or self.transport.is_closing():
            self.buffer = b""
            return
        if len(buffer) > (_STREAM_CAP if self.blocked_since is None else _BLOCKED_INPUT_CAP):
            self.abort("oversized message")
            return
        self.buffer = buffer
        if buffer and self.blocked_since is None:
            if self.partial_since is None:
                self.partial_since = now
        else:
            self.partial_since = None

    def _consume(self, buffer: bytes) -> bytes:
        """Answer every complete message in `buffer`; returns what is left (a partial message,
        or everything after the point where output blocked)."""
        core = self.server.core
        src = Source(self.name, self.peer[0], self.peer[1], self.local)
        while buffer:
            if self.blocked_since is not None:
                return buffer  # the peer is not reading: answer the rest once it does
            if buffer[0] in (13, 10):
                stripped = buffer.lstrip(b"\r\n")
                if b"\r\n\r\n" in buffer[: len(buffer) - len(stripped)]:
                    self.write(b"\r\n")  # RFC 5626 keep-alive: CRLFCRLF ping, CRLF pong
                buffer = stripped
                continue
            try:
                msg = parse_message(buffer, stream=True)
            except SipParseError as exc:
                if exc.reason in ("incomplete", "truncated_body"):
                    return buffer
                reply = core.bad_input(buffer, src, exc.reason)
                if reply is not None:
                    self.write(reply)
                self.close()  # the framing is lost: nothing after this can be trusted
                return b""
            raw, buffer = buffer[: msg.length], buffer[msg.length :]
            reply = core.handle_message(msg, src, raw)
            if reply is not None and not self.write(reply):
                return b""
        return buffer
