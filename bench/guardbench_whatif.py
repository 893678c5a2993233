"""A what-if guard worker for bench_guard.py's ban-latency diagnostic (not the product).

The shipped ``Guard`` and ``QueueRunner``, wired like ``floodguard run``'s worker, with two
changes to what a ban costs on the packet path:

- kernel set writes go through one raw netlink message (``NetlinkSets``: a sendto and the
  ACK, some tens of microseconds) instead of pyroute2's IPSet, which runs an asyncio loop per
  call (0.4 ms typical, several ms at p99 on the bench machine);
- no per-ban conntrack flush (the shipped worker starts a thread per ban that runs
  ``conntrack -D`` twice).

bench_guard.py runs the same crowd of guessers against it to show what those two changes are
worth. Output: the same JSON event lines as ``floodguard run``.

Usage: guardbench_whatif.py CONFIG
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from floodguard import config as configmod  # noqa: E402
from floodguard.events import EventLog  # noqa: E402
from floodguard.guard import Guard  # noqa: E402
from floodguard.kernel.ipset import SetManager  # noqa: E402
from floodguard.kernel.nfqueue import QueueRunner  # noqa: E402
from floodguard.kernel.rules import render  # noqa: E402
from floodguard.store import Store  # noqa: E402

NETLINK_NETFILTER = 12
NFNL_SUBSYS_IPSET = 6
IPSET_CMD_ADD = 9
IPSET_CMD_DEL = 10
IPSET_PROTOCOL = 6
IPSET_ATTR_PROTOCOL = 1
IPSET_ATTR_SETNAME = 2
IPSET_ATTR_DATA = 7
IPSET_ATTR_IP = 1
IPSET_ATTR_TIMEOUT = 6
IPSET_ATTR_IPADDR_IPV4 = 1
IPSET_ATTR_IPADDR_IPV6 = 2
IPSET_ERR_EXIST = 4103
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2


def _attr(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


class NetlinkSets:
    """SetWriter over one NETLINK_NETFILTER socket: add/remove = one message + its ACK."""

    def __init__(self, cfg: configmod.Config) -> None:
        self._names = {(s.kind, s.family): s.name for s in render(cfg).sets}
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._sock.bind((0, 0))
        self._seq = 0

    def _request(self, command: int, kind: str, ip: str, timeout: int | None) -> None:
        family = 6 if ":" in ip else 4
        name = self._names[(kind, family)]
        if family == 4:
            address = _attr(IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER,
                            socket.inet_pton(socket.AF_INET, ip))
        else:
            address = _attr(IPSET_ATTR_IPADDR_IPV6 | NLA_F_NET_BYTEORDER,
                            socket.inet_pton(socket.AF_INET6, ip))
        data = _attr(IPSET_ATTR_IP | NLA_F_NESTED, address)
        if timeout is not None:
            data += _attr(IPSET_ATTR_TIMEOUT | NLA_F_NET_BYTEORDER, struct.pack("!I", timeout))
        body = (struct.pack("=BBH", socket.AF_INET if family == 4 else socket.AF_INET6, 0, 0)
                + _attr(IPSET_ATTR_PROTOCOL, bytes([IPSET_PROTOCOL]))
                + _attr(IPSET_ATTR_SETNAME, name.encode() + b"\0")
                + _attr(IPSET_ATTR_DATA | NLA_F_NESTED, data))
        self._seq += 1
        # Without NLM_F_EXCL an existing entry is updated: a repeat ban renews its timeout.
        header = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_IPSET << 8) | command,
                             NLM_F_REQUEST | NLM_F_ACK, self._seq, 0)
        self._sock.send(header + body)
        while True:
            reply = self._sock.recv(65536)
            _, kind_, _, seq, _ = struct.unpack_from("=IHHII", reply)
            if kind_ == NLMSG_ERROR and seq == self._seq:
                (error,) = struct.unpack_from("=i", reply, 16)
                if error and not (command == IPSET_CMD_DEL and -error == IPSET_ERR_EXIST):
                    raise OSError(-error, f"ipset {name} {ip}: netlink error {-error}")
                return

    def add(self, kind: str, ip: str, timeout: int | None = None) -> None:
        self._request(IPSET_CMD_ADD, kind, ip, timeout)

    def remove(self, kind: str, ip: str) -> None:
        self._request(IPSET_CMD_DEL, kind, ip, None)


def main() -> int:
    cfg = configmod.load(sys.argv[1])
    stop = False

    def on_stop(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    events = EventLog()
    with SetManager(render(cfg).sets) as manager:
        manager.ensure()
    store = Store(cfg.state.path)
    guard = Guard(cfg, sets=NetlinkSets(cfg), store=store, events=events,
                  name=f"engine-q{cfg.queue.num}", flush_conntrack=None)
    restored = guard.restore()
    runner = QueueRunner(cfg.queue.num, guard.handle, fail_open=cfg.queue.fail_open)
    events.emit("guard_started", queue=cfg.queue.num, pid=os.getpid(), restored_bans=restored,
                variant="what-if")
    last_tick = 0.0
    try:
        while not stop:
            runner.poll(0.2)
            now = time.monotonic()
            if now - last_tick >= 0.5:
                last_tick = now
                guard.tick()
    finally:
        runner.drain()
        guard.snapshot()
        runner.close()
        store.close()
        events.emit("guard_stopped", queue=cfg.queue.num, packets=runner.packets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
