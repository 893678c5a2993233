"""Fast IPv4/IPv6 + UDP/TCP header parsing for packets handed over by NFQUEUE.

`parse_packet` reads a raw IP packet with slicing and `struct` only (no scapy: it is two orders
of magnitude slower) and returns a `Packet`, or None for anything it cannot or should not
read: short or truncated data, an unknown IP version, a protocol other than UDP/TCP, a
non-first fragment, too many IPv6 extension headers.  It never raises.

The common case, an unfragmented IPv4/UDP datagram without IP options, takes a short path
(one `struct` call for both addresses and the UDP header, addresses converted to text through
a small bounded cache: `inet_ntop` costs more than the rest of the header put together).
Everything else, and any doubt about the short path, goes through the general parser.
"""

import socket
import struct
from typing import NamedTuple

__all__ = [
    "ACK",
    "FIN",
    "PSH",
    "RST",
    "SYN",
    "URG",
    "Packet",
    "parse_packet",
    "replace_udp_payload",
]

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10
URG = 0x20

_UDP = 17
_TCP = 6
_V6_EXT_GENERIC = frozenset((0, 43, 60))  # hop-by-hop, routing, destination options
_V6_FRAGMENT = 44
_V6_MAX_EXT = 8

_ports = struct.Struct("!HH")
_seq_ack = struct.Struct("!II")
_udp_header = struct.Struct("!HHH")
_v4_udp = struct.Struct("!4s4sHHH")  # addresses (offset 12) and UDP header of a 20-byte header
_tuple_new = tuple.__new__

# Packed IPv4 address -> text.  Registrar traffic repeats a few addresses (our own on every
# packet); a flood of distinct sources only refills it: it is emptied when full.
_V4_CACHE_MAX = 16384
_v4_text: dict[bytes, str] = {}
_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_ntop = socket.inet_ntop


class Packet(NamedTuple):
    """The parts of an IP packet the guard looks at."""

    family: int  # 4 or 6
    src: str
    dst: str
    proto: str  # "udp" or "tcp"
    sport: int
    dport: int
    payload: bytes  # UDP datagram payload, or TCP segment data after the header
    tcp_flags: int  # TCP flag bits (FIN..CWR), 0 for UDP
    seq: int = 0  # TCP sequence number
    ack: int = 0  # TCP acknowledgement number


def _l4(
    data: bytes, family: int, src: str, dst: str, proto: int, off: int, end: int
) -> Packet | None:
    if proto == _UDP:
        if end - off < 8:
            return None
        sport, dport, length = _udp_header.unpack_from(data, off)
        if length < 8 or off + length > end:
            return None
        return Packet(family, src, dst, "udp", sport, dport, data[off + 8 : off + length], 0)
    if proto == _TCP:
        if end - off < 20:
            return None
        sport, dport = _ports.unpack_from(data, off)
        doff = (data[off + 12] >> 4) * 4
        if doff < 20 or off + doff > end:
            return None
        seq, ack = _seq_ack.unpack_from(data, off + 4)
        return Packet(
            family, src, dst, "tcp", sport, dport, data[off + doff : end], data[off + 13],
            seq, ack,
        )
    return None


def _parse_v4(data: bytes) -> Packet | None:
    n = len(data)
    if n < 20:
        return None
    ihl = (data[0] & 0x0F) * 4
    total = (data[2] << 8) | data[3]
    if ihl < 20 or total < ihl or total > n:
        return None
    if ((data[6] & 0x1F) << 8) | data[7]:
        return None  # not the first fragment: no transport header here
    proto = data[9]
    if proto != _UDP and proto != _TCP:
        return None
    return _l4(
        data, 4, _ntop(_AF_INET, data[12:16]), _ntop(_AF_INET, data[16:20]), proto, ihl, total
    )


def _parse_v6(data: bytes) -> Packet | None:
    n = len(data)
    if n < 40:
        return None
    end = 40 + ((data[4] << 8) | data[5])
    if end > n or end == 40:
        return None  # truncated, or a jumbogram / no payload
    proto = data[6]
    off = 40
    for _ in range(_V6_MAX_EXT):
        if proto in (_UDP, _TCP):
            break
        if proto in _V6_EXT_GENERIC:
            if off + 8 > end:
                return None
            proto, off = data[off], off + (data[off + 1] + 1) * 8
        elif proto == _V6_FRAGMENT:
            if off + 8 > end:
                return None
            if ((data[off + 2] << 8) | data[off + 3]) & 0xFFF8:
                return None  # not the first fragment
            proto, off = data[off], off + 8
        else:
            return None
    else:
        return None
    if off > end:
        return None
    return _l4(
        data, 6, _ntop(_AF_INET6, data[8:24]), _ntop(_AF_INET6, data[24:40]), proto, off, end
    )


def _v4_address(packed: bytes) -> str:
    text = _v4_text.get(packed)
    if text is None:
        if len(_v4_text) >= _V4_CACHE_MAX:
            _v4_text.clear()
        text = _v4_text[packed] = _ntop(_AF_INET, packed)
    return text


def parse_packet(data: bytes) -> Packet | None:
    """Parse a raw IPv4/IPv6 packet carrying UDP or TCP; None if it can't be read."""
    try:
        if type(data) is not bytes:
            data = bytes(data)
        if not data:
            return None
        if data[0] == 0x45 and len(data) >= 28 and data[9] == _UDP and not (
            (data[6] & 0x1F) or data[7]
        ):
            # IPv4, 20-byte header, UDP, not a fragment: exactly what _parse_v4 + _l4 return
            # when the lengths are consistent; anything else is left to them.
            total = (data[2] << 8) | data[3]
            src, dst, sport, dport, length = _v4_udp.unpack_from(data, 12)
            if length >= 8 and 20 + length <= total <= len(data):
                cache = _v4_text
                return _tuple_new(Packet, (
                    4, cache.get(src) or _v4_address(src), cache.get(dst) or _v4_address(dst),
                    "udp", sport, dport, data[28 : 20 + length], 0, 0, 0,
                ))
        version = data[0] >> 4
        if version == 4:
            return _parse_v4(data)
        if version == 6:
            return _parse_v6(data)
        return None
    except (IndexError, ValueError, TypeError, OSError, struct.error):
        # Defensive only: every offset is bounds-checked above.
        return None


# ---------------------------------------------------------------- rewriting a UDP payload

# A rewritten datagram stays under a common path MTU: a larger one might not leave (DF set).
MAX_REWRITTEN = 1400


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071). 2**16 = 1 modulo 0xFFFF, so the ones' complement sum
    of the 16-bit words is the whole buffer as one big integer modulo 0xFFFF (0 read as 0xFFFF
    unless every byte is zero): one C-level conversion instead of a loop over the words."""
    if len(data) % 2:
        data += b"\0"
    total = int.from_bytes(data, "big") % 0xFFFF
    if total == 0 and data.strip(b"\0"):
        total = 0xFFFF
    return ~total & 0xFFFF


def replace_udp_payload(data: bytes, payload: bytes) -> bytes | None:
    """The UDP packet ``data`` (IPv4, or IPv6 without extension headers) with a new payload,
    lengths and checksums recomputed; None for anything else, a fragment, or a result that grew
    past MAX_REWRITTEN bytes (a shrinking one is always possible)."""
    if len(data) < 28:
        return None
    version = data[0] >> 4
    if version == 4:
        ihl = (data[0] & 0x0F) * 4
        if ihl < 20 or len(data) < ihl + 8 or data[9] != _UDP:
            return None
        if struct.unpack_from("!H", data, 6)[0] & 0x3FFF:  # MF or a fragment offset
            return None
        head = 8 + ihl
        total = ihl + 8 + len(payload)
        if total > MAX_REWRITTEN and total > len(data):
            return None
        ip = bytearray(data[:ihl])
        struct.pack_into("!H", ip, 2, total)
        struct.pack_into("!H", ip, 10, 0)
        struct.pack_into("!H", ip, 10, _checksum(bytes(ip)))
        pseudo = bytes(ip[12:20]) + struct.pack("!BBH", 0, _UDP, 8 + len(payload))
    elif version == 6:
        if len(data) < 48 or data[6] != _UDP:
            return None
        head = 48
        if 48 + len(payload) > max(MAX_REWRITTEN, len(data)):
            return None
        ip = bytearray(data[:40])
        struct.pack_into("!H", ip, 4, 8 + len(payload))
        pseudo = bytes(ip[8:40]) + struct.pack("!IxxxB", 8 + len(payload), _UDP)
    else:
        return None
    sport, dport = _ports.unpack_from(data, head - 8)
    udp = bytearray(_udp_header.pack(sport, dport, 8 + len(payload)) + b"\0\0")
    checksum = _checksum(pseudo + bytes(udp) + payload) or 0xFFFF
    struct.pack_into("!H", udp, 6, checksum)
    return bytes(ip) + bytes(udp) + payload
