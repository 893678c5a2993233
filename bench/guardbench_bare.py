"""The bare NFQUEUE consumer bench_guard.py compares the guard with: accept every packet.

Binds the queue exactly as the guard does (same maximum queue length, socket buffer and copy
range), reads each payload (as any consumer must) and accepts it. Its loop is the guard's minus
the guard: wait for the socket, then netfilterqueue's non-blocking receive loop until the queue
is empty. Prints "ready", then on SIGTERM a JSON line with the number of packets it handled.

Usage: guardbench_bare.py QUEUE_NUM
"""

from __future__ import annotations

import json
import select
import signal
import sys
import warnings
from types import FrameType

from netfilterqueue import NetfilterQueue

MAX_LEN = 65536  # as floodguard.kernel.nfqueue.DEFAULT_MAX_LEN
SOCK_LEN = 8 * 1024 * 1024  # as floodguard.kernel.nfqueue.SOCKET_BUFFER


def main() -> int:
    queue_num = int(sys.argv[1])
    count = 0
    stopping = False

    def callback(packet: object) -> None:
        nonlocal count
        count += 1
        packet.get_payload()  # type: ignore[attr-defined]
        packet.accept()  # type: ignore[attr-defined]

    def stop(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    nfq = NetfilterQueue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        nfq.bind(queue_num, callback, max_len=MAX_LEN, sock_len=SOCK_LEN)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print("ready", flush=True)
    fd = nfq.get_fd()
    try:
        while not stopping:
            try:
                ready, _, _ = select.select([fd], [], [], 0.2)
            except InterruptedError:
                continue
            if ready:
                nfq.run(block=False)
    finally:
        nfq.unbind()
    print(json.dumps({"packets": count}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
