"""Fuzz target: the NFQUEUE binding's datagram parsing (ASan + UBSan) against a Python reading.

An input is one datagram as the kernel would deliver it (netlink messages carrying
NFQNL_MSG_PACKET attributes); its first byte chooses whether MSG_TRUNC is set and whether a
callback runs. The callback accepts, drops, raises or returns new content (sent at once with
the verdicts pending before it), depending on the payload. The binding's handle_datagram()
(through fuzz/nfq_harness.c) must hand the callback exactly the (payload, hook) pairs, with
arrival() giving each one's timestamp attribute (0.0 for none or an implausible one), count
exactly the packet messages and leave exactly the pending verdicts that a straightforward
Python reading of the same bytes gives.
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

from instrumented import argv, load  # noqa: E402

nfq = load("_nfq_fuzz")

NLMSG_HDRLEN = 16
HDRS_LEN = 20  # netlink header + nfgenmsg
NLMSG_ERROR = 2
MSG_PACKET = (3 << 8) | 0  # NFNL_SUBSYS_QUEUE, NFQNL_MSG_PACKET
NFQA_PACKET_HDR, NFQA_TIMESTAMP, NFQA_PAYLOAD = 1, 4, 10
NLA_TYPE_MASK = 0x3FFF
BATCH = 256


class Mismatch(AssertionError):
    """The binding and the reference reading disagree."""


def align4(n: int) -> int:
    return (n + 3) & ~3


Packet = tuple[bytes, int, int, bool, float]


def stamp(value: bytes) -> float:
    """An NFQA_TIMESTAMP's seconds (big-endian sec, usec); 0.0 unless plausible."""
    sec, usec = struct.unpack_from(">QQ", value)
    return sec + usec / 1e6 if 0 < sec < 1 << 40 and usec < 1_000_000 else 0.0


def reference(data: bytes, truncated: bool) -> tuple[int, list[Packet]]:
    """(packet messages, [(payload, hook, id, cut short, arrival)] of the packets that have an
    id)."""
    count, packets, off, n = 0, [], 0, len(data)
    while off + NLMSG_HDRLEN <= n:
        length, kind = struct.unpack_from("=IH", data, off)
        cut = False
        if length < NLMSG_HDRLEN:
            break
        if length > n - off:
            if not truncated:
                break
            length, cut = n - off, True
        if kind == MSG_PACKET and length >= HDRS_LEN:
            count += 1
            pid, hook, payload, arrival = None, 0, b"", 0.0
            p, end = off + HDRS_LEN, off + length
            while p + 4 <= end:
                alen, atype = struct.unpack_from("=HH", data, p)
                if alen < 4 or alen > end - p:
                    break
                value = data[p + 4:p + alen]
                if atype & NLA_TYPE_MASK == NFQA_PACKET_HDR and len(value) >= 7:
                    pid, hook = struct.unpack_from(">I", value)[0], value[6]
                elif atype & NLA_TYPE_MASK == NFQA_PAYLOAD:
                    payload = value
                elif atype & NLA_TYPE_MASK == NFQA_TIMESTAMP and len(value) >= 16:
                    arrival = stamp(value)
                p += align4(alen)
            if pid is not None:
                packets.append((payload, hook, pid, cut, arrival))
        off += align4(length)
    return count, packets


MAX_COPY_RANGE = 0xFFFF - 4  # longest new content the binding sends


def verdict(payload: bytes) -> bool | bytes:
    """Accept, drop or accept with new content (bytes), spread over the payloads; new content
    too long to send (a ``#`` first) must fall back to accepting the packet unchanged."""
    if payload[:1] == b"#":
        return b"x" * (MAX_COPY_RANGE + 1)
    pick = zlib.crc32(payload) % 3
    return True if pick == 0 else False if pick == 1 else payload[::-1] + b"+"


def check(data: bytes) -> None:
    mode, body = (data[0], data[1:]) if data else (0, b"")
    truncated, with_callback = bool(mode & 1), not mode & 2
    seen: list[tuple[bytes, int, float]] = []

    def callback(payload: bytes, hook: int) -> bool | bytes:
        if type(payload) is not bytes or type(hook) is not int:
            raise Mismatch(f"callback got {type(payload)}, {type(hook)}")
        seen.append((payload, hook, nfq.arrival()))
        if payload[:1] == b"!":
            raise ValueError("a callback error: the packet gets the fail_open verdict")
        return verdict(payload)

    count, drops, accept = nfq.feed(body, truncated, callback if with_callback else None)
    want_count, packets = reference(body, truncated)
    if count != want_count:
        raise Mismatch(f"{count} packet messages, the reference reads {want_count}")
    judged = [(payload, hook, arrival) for payload, hook, _pid, cut, arrival in packets
              if not cut]
    if seen != (judged if with_callback else []):
        raise Mismatch(f"callback saw {seen!r}, the reference {judged!r}")
    # the verdicts still pending: drops since the last full batch, the last accept since then
    want_drops: list[int] = []
    want_accept: int | None = None
    # fail_open: accept unless the callback drops
    for payload, _hook, pid, cut, _arrival in packets:
        given = True if cut or not with_callback or payload[:1] == b"!" else verdict(payload)
        if isinstance(given, bytes) and len(given) <= MAX_COPY_RANGE:
            want_drops, want_accept = [], None  # sent at once, after everything pending
            continue
        if given:
            want_accept = pid
        else:
            if len(want_drops) == BATCH:
                want_drops, want_accept = [], None
            want_drops.append(pid)
    if (drops, accept) != (want_drops, want_accept):
        raise Mismatch(f"pending verdicts {drops!r}/{accept!r}, "
                       f"the reference {want_drops!r}/{want_accept!r}")


def main() -> None:
    atheris.Setup(argv(), check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
