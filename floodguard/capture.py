"""Capture files for ``floodguard replay``: classic pcap and pcapng, read into IP packets.

Classic pcap as tcpdump writes it: microsecond or nanosecond timestamps, either byte order.
pcapng as Wireshark and dumpcap write it by default: Section Header, Interface Description,
Enhanced Packet and Simple Packet blocks, either byte order, several sections and interfaces,
each interface with its own link type and timestamp resolution (``if_tsresol``, ``if_tsoffset``);
other blocks (name resolution, interface statistics, custom, ...) are skipped. Link types:
Ethernet (with VLAN tags), Linux cooked (SLL, SLL2) and raw IP; other frames (ARP, ...) are
left out.

Bad input is a ``PcapError`` (the CLI's exit 4) saying where and what, and no length read from
the file makes the reader allocate more than ``MAX_BLOCK`` bytes. A file that ends inside a
record (a capture cut short: the writer killed, the disk full) is not an error: every whole
packet before the cut is read, then ``Capture.truncated`` says where the file stopped.
"""

from __future__ import annotations

import struct
from collections.abc import Generator, Iterator
from typing import BinaryIO

from floodguard.errors import RefusedError

# The largest block or record read (wiretap's limit too); libpcap's snapshot length is 256 KiB.
MAX_BLOCK = 16 * 1024 * 1024

LINK_ETHERNET = 1
LINK_RAW = 101
LINK_SLL = 113
LINK_IPV4 = 228
LINK_IPV6 = 229
LINK_SLL2 = 276
LINK_TYPES = frozenset((LINK_ETHERNET, LINK_RAW, LINK_SLL, LINK_IPV4, LINK_IPV6, LINK_SLL2))
_ETHERTYPES_IP = (0x0800, 0x86DD)

# classic pcap: magic -> (byte order, timestamp units per second)
_CLASSIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 10**6), b"\xa1\xb2\xc3\xd4": (">", 10**6),
    b"\x4d\x3c\xb2\xa1": ("<", 10**9), b"\xa1\xb2\x3c\x4d": (">", 10**9),
}
# pcapng block types and options
_SHB, _IDB, _SPB, _EPB = 0x0A0D0D0A, 1, 3, 6
_SHB_TYPE = b"\x0a\x0d\x0d\x0a"  # the same bytes in either byte order
_BYTE_ORDER = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}
_OPT_END, _IF_TSRESOL, _IF_TSOFFSET = 0, 9, 14


class PcapError(RefusedError):
    """The file is not a capture this reader understands, or is corrupt; the message says why."""


def ip_payload(link: int, frame: bytes) -> bytes | None:
    """The IPv4/IPv6 packet in a frame of that link type, or None for anything else."""
    if link in (LINK_RAW, LINK_IPV4, LINK_IPV6):
        return frame
    if link == LINK_ETHERNET:
        offset, ethertype = 14, int.from_bytes(frame[12:14], "big")
        while ethertype in (0x8100, 0x88A8) and len(frame) >= offset + 4:  # VLAN tags
            ethertype = int.from_bytes(frame[offset + 2:offset + 4], "big")
            offset += 4
        return frame[offset:] if ethertype in _ETHERTYPES_IP else None
    if link == LINK_SLL:
        return frame[16:] if int.from_bytes(frame[14:16], "big") in _ETHERTYPES_IP else None
    if link == LINK_SLL2:
        return frame[20:] if int.from_bytes(frame[0:2], "big") in _ETHERTYPES_IP else None
    return None


def _timestamp(seconds: int, ticks: int, per_second: int) -> float:
    """seconds + ticks / per_second, the same float for the same instant in either format."""
    whole, fraction = divmod(ticks, per_second)
    return (seconds + whole) + fraction / per_second


class _Interface:
    """A pcapng interface: its link type, timestamp units and offset, snapshot length."""

    __slots__ = ("link", "offset", "per_second", "snaplen")

    def __init__(self, link: int, snaplen: int, per_second: int, offset: int) -> None:
        self.link, self.snaplen, self.per_second, self.offset = link, snaplen, per_second, offset


class Capture:
    """Iterate a classic pcap or pcapng stream as (timestamp, IP packet)."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.offset = 0  # bytes read so far, for the messages
        self.format = ""  # "pcap" or "pcapng" once the header is read
        self.truncated: str | None = None  # where the file stopped inside a record
        # a pcapng Simple Packet Block carries no timestamp: the packet's before it stands in
        self.last = 0.0

    def __iter__(self) -> Iterator[tuple[float, bytes]]:
        for ts, link, frame in self.frames():
            packet = ip_payload(link, frame)
            if packet is not None:
                yield ts, packet

    def frames(self) -> Iterator[tuple[float, int, bytes]]:
        """(timestamp, link type, frame) for every packet record."""
        magic = self._read(4)
        if magic in _CLASSIC:
            self.format = "pcap"
            yield from self._classic(magic)
        elif magic == _SHB_TYPE:
            self.format = "pcapng"
            yield from self._pcapng()
        else:
            raise PcapError("not a pcap or pcapng file")

    # ------------------------------------------------------------ reading

    def _read(self, size: int) -> bytes:
        data = self.stream.read(size)
        self.offset += len(data)
        return data

    def _whole(self, size: int, what: str, start: int) -> bytes | None:
        """Exactly size bytes, or None after noting that the file ends inside ``what``."""
        data = self._read(size)
        if len(data) < size:
            self.truncated = (f"the file ends inside {what} at offset {start} "
                              "(a capture cut short): read the whole packets before it")
            return None
        return data

    # ------------------------------------------------------------ classic pcap

    def _classic(self, magic: bytes) -> Iterator[tuple[float, int, bytes]]:
        order, per_second = _CLASSIC[magic]
        header = self._whole(20, "the file header", 0)
        if header is None:
            return
        link = struct.unpack(order + "I", header[16:20])[0] & 0x0FFFFFFF
        if link not in LINK_TYPES:
            raise PcapError(f"unsupported link type {link}")
        record = struct.Struct(order + "IIII")
        while True:
            start = self.offset
            head = self._read(16)
            if not head:
                return
            if len(head) < 16:
                self._whole(16, "a record header", start)  # notes the cut
                return
            seconds, fraction, captured, _ = record.unpack(head)
            if captured > MAX_BLOCK:
                raise PcapError(f"offset {start}: a record of {captured} bytes "
                                f"(corrupt: at most {MAX_BLOCK})")
            frame = self._whole(captured, "a packet", start)
            if frame is None:
                return
            yield _timestamp(seconds, fraction, per_second), link, frame

    # ------------------------------------------------------------ pcapng

    def _block(self, order: str, length: int, start: int, header: int) -> bytes | None:
        """The body of a block whose first ``header`` bytes are read: up to its trailing
        length, which must repeat the leading one. None when the file ends inside it."""
        if length < max(12, header + 4) or length % 4:
            raise PcapError(f"offset {start}: block length {length} "
                            f"(corrupt: a multiple of 4, at least {max(12, header + 4)})")
        if length > MAX_BLOCK:
            raise PcapError(f"offset {start}: a block of {length} bytes "
                            f"(corrupt: at most {MAX_BLOCK})")
        rest = self._whole(length - header, "a block", start)
        if rest is None:
            return None
        (trailer,) = struct.unpack(order + "I", rest[-4:])
        if trailer != length:
            raise PcapError(f"offset {start}: block length {length} but {trailer} at its end "
                            "(corrupt)")
        return rest[:-4]

    def _pcapng(self) -> Iterator[tuple[float, int, bytes]]:
        start = 0
        head = self._whole(8, "a section header", start)
        while head is not None:  # one section per pass; head: its length and byte-order magic
            order = _BYTE_ORDER.get(head[4:8])
            if order is None:
                raise PcapError(f"offset {start}: section header without a byte-order magic "
                                "(corrupt)")
            (length,) = struct.unpack(order + "I", head[:4])
            body = self._block(order, length, start, 12)
            if body is None:
                return
            if len(body) < 12:
                raise PcapError(f"offset {start}: section header too short (corrupt)")
            major, minor = struct.unpack(order + "HH", body[:4])
            if major != 1:
                raise PcapError(f"offset {start}: pcapng version {major}.{minor} "
                                "(this reader knows 1.x)")
            head, start = yield from self._section(order)

    def _section(self, order: str) -> Generator[tuple[float, int, bytes], None,
                                                tuple[bytes | None, int]]:
        """The blocks of one section. Returns (the next section header's first 8 bytes after
        its type, its offset), or (None, offset) at the end of the file."""
        interfaces: list[_Interface] = []
        while True:
            start = self.offset
            head = self._read(8)
            if not head:
                return None, start
            if len(head) < 8:
                self._whole(8, "a block header", start)
                return None, start
            if head[:4] == _SHB_TYPE:
                magic = self._whole(4, "a section header", start)
                return (None if magic is None else head[4:] + magic), start
            kind, length = struct.unpack(order + "II", head)
            body = self._block(order, length, start, 8)
            if body is None:
                return None, start
            if kind == _IDB:
                interfaces.append(self._interface(order, body, start, len(interfaces)))
            elif kind == _EPB:
                if len(body) < 20:
                    raise PcapError(f"offset {start}: enhanced packet block too short (corrupt)")
                number, high, low, captured, _ = struct.unpack(order + "IIIII", body[:20])
                iface = self._of(interfaces, number, start)
                if captured > len(body) - 20:
                    raise PcapError(f"offset {start}: captured length {captured} runs past "
                                    "its block (corrupt)")
                self.last = _timestamp(iface.offset, (high << 32) | low, iface.per_second)
                yield self.last, iface.link, body[20:20 + captured]
            elif kind == _SPB:
                if len(body) < 4:
                    raise PcapError(f"offset {start}: simple packet block too short (corrupt)")
                iface = self._of(interfaces, 0, start)
                (original,) = struct.unpack(order + "I", body[:4])
                captured = min(original, len(body) - 4, iface.snaplen or original)
                yield self.last, iface.link, body[4:4 + captured]

    @staticmethod
    def _of(interfaces: list[_Interface], number: int, start: int) -> _Interface:
        if number >= len(interfaces):
            raise PcapError(f"offset {start}: a packet of interface {number}, which the section "
                            "does not describe (corrupt)")
        return interfaces[number]

    @staticmethod
    def _interface(order: str, body: bytes, start: int, number: int) -> _Interface:
        if len(body) < 8:
            raise PcapError(f"offset {start}: interface description too short (corrupt)")
        link, _, snaplen = struct.unpack(order + "HHI", body[:8])
        if link not in LINK_TYPES:
            raise PcapError(f"interface {number}: unsupported link type {link}")
        per_second, offset = 10**6, 0
        for code, value in _options(order, body[8:], start):
            if code == _IF_TSRESOL:
                if len(value) != 1:
                    raise PcapError(f"offset {start}: if_tsresol of {len(value)} bytes (corrupt)")
                exponent = value[0] & 0x7F
                per_second = 2**exponent if value[0] & 0x80 else 10**exponent
            elif code == _IF_TSOFFSET:
                if len(value) != 8:
                    raise PcapError(f"offset {start}: if_tsoffset of {len(value)} bytes "
                                    "(corrupt)")
                (offset,) = struct.unpack(order + "q", value)
        return _Interface(link, snaplen, per_second, offset)


def _options(order: str, data: bytes, start: int) -> Iterator[tuple[int, bytes]]:
    """(code, value) of a block's options, up to opt_endofopt or the end of the block."""
    pos = 0
    while pos + 4 <= len(data):
        code, size = struct.unpack_from(order + "HH", data, pos)
        if code == _OPT_END:
            return
        end = pos + 4 + size
        if end > len(data):
            raise PcapError(f"offset {start}: option {code} of {size} bytes runs past its block "
                            "(corrupt)")
        yield code, data[pos + 4:end]
        pos = end + (-size % 4)
