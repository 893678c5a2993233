"""Which NFQUEUE a client's packets go to: the queue target options and, with several
workers, the slicing of clients over the queues by a byte of their address.

``queue_slices`` gives the rules' u32 matches (one per worker queue), ``queue_for`` answers the
same question in Python for one address (the guard uses it to find the worker owning a source).
"""

from __future__ import annotations

import ipaddress
from typing import Any


def queue_args(num: int, fail_open: bool) -> str:
    """NFQUEUE target options for one queue."""
    return f"--queue-num {num}" + (" --queue-bypass" if fail_open else "")


# Byte offsets (into the IP header) of the 32-bit word whose low byte is the last byte of the
# address that picks the worker: the IPv4 source/destination's last octet, the last byte of an
# IPv6 source/destination's /prefix (so a host rotating addresses in its /64 meets one worker).
def _slice_offset(family: int, direction: str, v6_prefix: int) -> int:
    if family == 4:
        return 12 if direction == "src" else 16
    start = 8 if direction == "src" else 24
    return start + max(1, v6_prefix // 8) - 4


def queue_for(ip: str, num: int, workers: int, v6_prefix: int) -> int:
    """The queue the rules send this client address to (see queue_slices)."""
    packed = ipaddress.ip_address(ip).packed
    byte = packed[-1] if len(packed) == 4 else packed[max(1, v6_prefix // 8) - 1]
    for i in range(workers):
        if i * 256 // workers <= byte <= (i + 1) * 256 // workers - 1:
            return num + i
    return num + workers - 1


def queue_slices(num: int, workers: int, family: int, v6_prefix: int) -> list[dict[str, Any]]:
    """With several workers, one rule per queue: a u32 match on a byte of the client's address
    (source of requests, destination of responses) picks the queue, so all traffic of one source
    (UDP and TCP, requests and responses) meets the same engine. The kernel's --queue-balance
    hashes the protocol and both addresses, which splits one source over several engines."""
    out = []
    for i in range(workers):
        lo, hi = i * 256 // workers, (i + 1) * 256 // workers - 1
        span = f"0x{lo:x}" if lo == hi else f"0x{lo:x}:0x{hi:x}"
        out.append({
            "slice_src": f"0x{_slice_offset(family, 'src', v6_prefix):x}&0xff={span}",
            "slice_dst": f"0x{_slice_offset(family, 'dst', v6_prefix):x}&0xff={span}",
            "queue_one": num + i,
        })
    return out
