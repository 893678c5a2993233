"""NFQUEUE consumer loop: binds one queue, hands each payload to a verdict function.

The loop polls the queue's netlink socket with a timeout so that periodic work (operator
commands, snapshots, rule checks) and signals are handled between packets without threads.
"""

from __future__ import annotations

import errno
import select
import warnings
from collections.abc import Callable

from netfilterqueue import NetfilterQueue

Verdict = Callable[[bytes, int], bool]

# netfilter hook numbers as reported by Packet.hook
HOOK_LOCAL_IN = 1
HOOK_FORWARD = 2
HOOK_LOCAL_OUT = 3

# Enough for a burst of several seconds at the guard's throughput; the kernel drops (or with
# --queue-bypass, accepts) beyond it.
DEFAULT_MAX_LEN = 65536
SOCKET_BUFFER = 8 * 1024 * 1024


class QueueError(Exception):
    """The queue cannot be bound (not root, no kernel support, already bound)."""


class QueueRunner:
    """Consumes one NFQUEUE; ``verdict(payload, hook) -> True`` accepts, ``False`` drops."""

    def __init__(
        self, queue_num: int, verdict: Verdict, *, fail_open: bool = True,
        max_len: int = DEFAULT_MAX_LEN,
    ) -> None:
        self.queue_num = queue_num
        self.verdict = verdict
        self.fail_open = fail_open
        self.errors = 0
        self.packets = 0
        self._nfq = NetfilterQueue()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a smaller buffer still works
                self._nfq.bind(queue_num, self._callback, max_len=max_len, sock_len=SOCKET_BUFFER)
        except OSError as exc:
            raise QueueError(f"cannot bind NFQUEUE {queue_num}: {exc}") from None

    def _callback(self, packet: object) -> None:
        self.packets += 1
        try:
            accept = self.verdict(packet.get_payload(), packet.hook)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 — one bad packet must never stop the queue
            self.errors += 1
            accept = self.fail_open
        if accept:
            packet.accept()  # type: ignore[attr-defined]
        else:
            packet.drop()  # type: ignore[attr-defined]

    def poll(self, timeout: float) -> None:
        """Wait up to timeout seconds for packets, then handle every packet that is queued."""
        fd = self._nfq.get_fd()
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
        except InterruptedError:
            return
        if ready:
            try:
                self._nfq.run(block=False)
            except OSError as exc:
                if exc.errno not in (errno.EINTR, errno.EAGAIN, errno.ENOBUFS):
                    raise

    def drain(self) -> None:
        """Give a verdict to everything already queued (used before exit)."""
        self.poll(0)

    def close(self) -> None:
        self._nfq.unbind()
