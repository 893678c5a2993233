"""The registrar's UDP sockets on the event loop: each wakeup reads a batch, answers it together.

asyncio's datagram transport reads one datagram per event-loop iteration and sends each answer
alone. `UdpEndpoint` reads up to `batch` waiting datagrams in one call and sends their answers
in one (`floodguard.registrar._udp`: recvmmsg, sendmmsg), so a busy peer is woken once per
batch of answers rather than once per answer.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Protocol

from floodguard.registrar._udp import recv_batch, send_batch
from floodguard.registrar.core import Source

UDP_BATCH = 64


class Owner(Protocol):
    """What an endpoint asks of the server it belongs to."""

    errors: Callable[[str], None]  # logs the exception being handled

    def begin_batch(self) -> Callable[[bytes, Source], bytes | None]: ...
    def batch_done(self) -> None: ...


class UdpEndpoint:
    """One UDP socket, read with `add_reader` and drained up to `batch` datagrams a wakeup."""

    def __init__(self, owner: Owner, sock: socket.socket, local: str) -> None:
        self.owner = owner
        self.sock = sock
        self.fd = sock.fileno()
        self.local = local
        self.closed = False
        self.batch = UDP_BATCH
        self.pending: list[tuple[bytes, str, int]] = []

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_reader(self.fd, self._read_ready)

    def close(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.closed:
            self.closed = True
            self.flush()
            loop.remove_reader(self.fd)
            self.sock.close()

    def is_closing(self) -> bool:
        return self.closed

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        """Send one datagram now; the peer retransmits if the kernel drops it."""
        send_batch(self.fd, [(data, addr[0], addr[1])])

    def queue(self, data: bytes, ip: str, port: int) -> None:
        """Send with the rest of this batch (`flush`)."""
        self.pending.append((data, ip, port))

    def flush(self) -> None:
        if self.pending:
            replies, self.pending = self.pending, []
            send_batch(self.fd, replies)

    def _read_ready(self) -> None:
        handle = self.owner.begin_batch()
        local = self.local
        try:
            for data, ip, port in recv_batch(self.fd, self.batch):
                try:
                    reply = handle(data, Source("udp", ip, port, local))
                except Exception:
                    self.owner.errors("unexpected error handling a UDP datagram")
                    continue
                if reply is not None:
                    self.pending.append((reply, ip, port))
        finally:
            self.flush()
            self.owner.batch_done()
