"""NFQUEUE consumer loop: binds one queue, hands each payload to a verdict function.

The queue is read by ``floodguard.kernel._nfq``, a small C binding over raw netlink: each
``poll`` reads the queued packets in batches (one ``recvmmsg`` for up to 32 packets), calls the
verdict function once per packet with the payload as bytes, and answers each batch of up to 256
packets with a single ``sendmsg`` (the drops, then one batch accept).

The loop polls the queue's netlink socket with a timeout so that periodic work (operator
commands, snapshots, rule checks) and signals are handled between packets without threads.
Packets arrive whole up to COPY_RANGE bytes; a longer one (an IPv4 packet within 4 bytes of
the 65,535-byte maximum) arrives cut to COPY_RANGE bytes and is counted in ``truncated``.

``arrival_clock`` is the guard's clock: monotonic seconds that, while a packet is judged, go
back to when the kernel received it (its receive timestamp, which a bound queue turns on). A
guard that stalled (CPU contention, a slow disk) and then reads its backlog at once sees those
packets spaced as they arrived, so its per-source rates judge the sender, not the stall.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from floodguard.errors import FloodguardError
from floodguard.kernel import _nfq

# () -> float: time.monotonic()'s clock, less the judged packet's time in the queue (at most
# _nfq.MAX_LAG); never earlier than a value it already returned
arrival_clock = _nfq.now
# () -> float: the judged packet's receive timestamp (time.time()'s clock), 0.0 if none
arrival = _nfq.arrival

# True accepts, False drops, bytes accepts the packet with that new content
Verdict = Callable[[bytes, int], bool | bytes]

# netfilter hook numbers as passed to the verdict function
HOOK_LOCAL_IN = 1
HOOK_FORWARD = 2
HOOK_LOCAL_OUT = 3

# Bytes of each packet copied to userspace: the kernel's largest copy (a netlink attribute's
# 16-bit length less its 4-byte header). Every packet up to this length arrives whole.
COPY_RANGE = _nfq.MAX_COPY_RANGE
# Enough for a burst of several seconds at the guard's throughput; beyond it the kernel drops
# new packets (or, with accept_overflow, accepts them) without queueing them.
DEFAULT_MAX_LEN = 65536
SOCKET_BUFFER = 8 * 1024 * 1024
# Packets handled per poll() at most, so that the caller's periodic work runs under a flood.
MAX_PER_POLL = 4096


class QueueError(FloodguardError):
    """The queue cannot be bound (not root, no kernel support, already bound)."""


class QueueRunner:
    """Consumes one NFQUEUE; ``verdict(payload, hook) -> True`` accepts, ``False`` drops.

    With ``fail_open`` a packet whose verdict function raises is accepted (else dropped). A
    packet the queue cannot take (full, socket buffer full) is dropped by the kernel unless
    ``accept_overflow``: a flood beyond what the guard handles must not reach the registrar
    unchecked. (With the guard down the rules' --queue-bypass lets SIP through.)
    """

    def __init__(
        self, queue_num: int, verdict: Verdict, *, fail_open: bool = True,
        accept_overflow: bool = False, max_len: int = DEFAULT_MAX_LEN,
        out_mark: tuple[int, int] = (0, 0),
    ) -> None:
        """``out_mark`` (value, mask): packets whose mark matches are reported with the
        LOCAL_OUT hook, as the registrar's output (forward mode); (0, 0) for none."""
        self.queue_num = queue_num
        self.verdict = verdict
        self._max_len = max_len
        try:
            self._queue = _nfq.Queue(queue_num, max_len=max_len, fail_open=fail_open,
                                     accept_overflow=accept_overflow, copy_range=COPY_RANGE,
                                     rcvbuf=SOCKET_BUFFER, out_mark=out_mark[0],
                                     out_mask=out_mark[1])
        except OSError as exc:
            raise QueueError(f"cannot bind NFQUEUE {queue_num}: "
                             f"{exc.strerror or exc}") from None

    @property
    def fail_open(self) -> bool:
        """Fixed when the queue is bound (the kernel holds the flag too)."""
        return self._queue.fail_open

    @property
    def packets(self) -> int:
        return self._queue.packets

    @property
    def errors(self) -> int:
        """Packets the verdict function raised on (they got the fail_open verdict)."""
        return self._queue.errors

    @property
    def truncated(self) -> int:
        """Packets longer than COPY_RANGE (handed over cut short)."""
        return self._queue.truncated

    def poll(self, timeout: float) -> None:
        """Wait up to timeout seconds for packets, then handle the packets that are queued
        (at most MAX_PER_POLL)."""
        try:
            self._queue.run(self.verdict, timeout, MAX_PER_POLL)
        except OSError as exc:
            if exc.errno not in (errno.EINTR, errno.EAGAIN, errno.ENOBUFS):
                raise

    def drain(self) -> None:
        """Give a verdict to everything already queued (used before exit): at most the queue's
        length, so a flood that keeps coming cannot hold the exit up."""
        handled = 0
        while handled < self._max_len:
            try:
                n = self._queue.run(self.verdict, 0, MAX_PER_POLL)
            except OSError as exc:
                if exc.errno not in (errno.EINTR, errno.EAGAIN, errno.ENOBUFS):
                    raise
                return
            handled += n
            if n < MAX_PER_POLL:
                return

    def close(self) -> None:
        """Unbind the queue and close its socket (packets still queued are dropped)."""
        self._queue.close()
