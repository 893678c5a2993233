"""Records the registrar's 401s as they leave the server's interface (bench_guard.py helper).

Runs in the server namespace with an AF_PACKET socket on the given interface and keeps, for
every outgoing UDP datagram from port 5060 whose payload starts with "SIP/2.0 401", the
destination address, the CSeq number, Kamailio's send-time stamp (header X-Fg-Ts, added by
bench_guard.py's Kamailio config) and the capture time. Seeing the 401s at the wire, instead
of at the guessers, means a guesser that gives up early still leaves a complete record.

Prints "ready"; on SIGTERM prints one JSON object: destination -> [[cseq, stamp, captured]].

Usage: guardbench_capture.py IFACE
"""

from __future__ import annotations

import ctypes
import json
import select
import signal
import socket
import sys
import time
from types import FrameType

ETH_P_ALL = 0x0003  # ETH_P_IP alone does not see this host's outgoing packets on a veth
ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26

# Classic BPF, run by the kernel on each packet (network header at offset 0 on a SOCK_DGRAM
# packet socket): keep outgoing UDP from port 5060 (20-byte IP header), drop the rest, so
# this process wakes only for the registrar's answers.
_FILTER = [
    (0x20, 0, 0, 0xFFFFF004),  # ld  pkttype (SKF_AD_OFF + SKF_AD_PKTTYPE)
    (0x15, 0, 5, PACKET_OUTGOING),  # jeq outgoing, else drop
    (0x30, 0, 0, 9),  # ldb [9]: IP protocol
    (0x15, 0, 3, 17),  # jeq UDP, else drop
    (0x28, 0, 0, 20),  # ldh [20]: UDP source port
    (0x15, 0, 1, 5060),  # jeq 5060, else drop
    (0x06, 0, 0, 0xFFFF),  # ret: keep
    (0x06, 0, 0, 0),  # ret: drop
]


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def _attach_filter(sock: socket.socket) -> None:
    program = (_SockFilter * len(_FILTER))(*(_SockFilter(*op) for op in _FILTER))
    fprog = _SockFprog(len(_FILTER), ctypes.cast(program, ctypes.POINTER(_SockFilter)))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, bytes(fprog))


def _field(payload: bytes, name: bytes) -> bytes | None:
    pos = payload.find(b"\r\n" + name)
    if pos < 0:
        return None
    start = pos + 2 + len(name)
    return payload[start : payload.find(b"\r\n", start)].strip()


def main() -> int:
    iface = sys.argv[1]
    stopping = False

    def stop(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
    sock.bind((iface, ETH_P_ALL))
    _attach_filter(sock)
    sock.setblocking(False)
    seen: dict[str, list[list[float]]] = {}
    print("ready", flush=True)
    while not stopping:
        try:
            ready, _, _ = select.select([sock], [], [], 0.1)
        except InterruptedError:
            continue
        if not ready:
            continue
        while True:
            try:
                data, addr = sock.recvfrom(65535)
            except BlockingIOError:
                break
            captured = time.time()
            if (addr[2] != PACKET_OUTGOING or addr[1] != ETH_P_IP or len(data) < 40
                    or data[9] != 17):
                continue
            ihl = (data[0] & 0x0F) * 4
            if (data[ihl] << 8 | data[ihl + 1]) != 5060:
                continue
            payload = data[ihl + 8 :]
            if not payload.startswith(b"SIP/2.0 401"):
                continue
            stamp = _field(payload, b"X-Fg-Ts:")
            cseq = (_field(payload, b"CSeq:") or b"0").split()[0]
            dst = socket.inet_ntoa(data[16:20])
            seen.setdefault(dst, []).append(
                [int(cseq) if cseq.isdigit() else 0, float(stamp) if stamp else 0.0, captured])
    print(json.dumps(seen), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
