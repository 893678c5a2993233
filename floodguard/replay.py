"""``floodguard replay FILE.pcap``: run the policy over a capture offline and say what it would ban.

Reads classic pcap files (as tcpdump writes them; microsecond or nanosecond timestamps, either
byte order) with Ethernet, Linux cooked (SLL, SLL2) or raw IP link types. Each packet goes
through the same guard code as live traffic, with the capture's timestamps as the clock, so the
bans listed are the ones the live guard would have made on that traffic.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from floodguard.config import Config, SipConfig
from floodguard.errors import RefusedError
from floodguard.events import EventLog
from floodguard.guard import HOOK_LOCAL_IN, HOOK_LOCAL_OUT, Guard
from floodguard.packet import parse_packet
from floodguard.store import Store

_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6), b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9), b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
LINK_ETHERNET = 1
LINK_RAW = 101
LINK_SLL = 113
LINK_IPV4 = 228
LINK_IPV6 = 229
LINK_SLL2 = 276
_ETHERTYPES_IP = (0x0800, 0x86DD)


class PcapError(RefusedError):
    """The file is not a pcap this reader understands; the message says why."""


def _ip_payload(link: int, frame: bytes) -> bytes | None:
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


def read_pcap(stream: BinaryIO) -> Iterator[tuple[float, bytes]]:
    """(timestamp, IP packet) for every IPv4/IPv6 packet in a classic pcap stream."""
    header = stream.read(24)
    if len(header) < 24 or header[:4] not in _MAGIC:
        if header[:4] == b"\x0a\x0d\x0d\x0a":
            raise PcapError("pcapng is not supported: convert with "
                            "`editcap -F pcap in.pcapng out.pcap` or capture with tcpdump -w")
        raise PcapError("not a pcap file")
    order, unit = _MAGIC[header[:4]]
    link = struct.unpack(order + "I", header[20:24])[0] & 0x0FFFFFFF
    if link not in (LINK_ETHERNET, LINK_RAW, LINK_SLL, LINK_IPV4, LINK_IPV6, LINK_SLL2):
        raise PcapError(f"unsupported link type {link}")
    record = struct.Struct(order + "IIII")
    while True:
        head = stream.read(16)
        if len(head) < 16:
            return
        seconds, fraction, captured, _ = record.unpack(head)
        frame = stream.read(captured)
        if len(frame) < captured:
            return  # a capture cut short: stop at the last whole packet
        packet = _ip_payload(link, frame)
        if packet is not None:
            yield seconds + fraction * unit, packet


class _NoSets:
    def add(self, kind: str, ip: str, timeout: int | None = None) -> None:
        pass

    def remove(self, kind: str, ip: str) -> None:
        pass


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Decision:
    """A ban or suspension the policy made during the replay."""

    at: float
    offset: float
    ip: str
    kind: str
    reason: str
    aor: str | None
    failures: int
    seconds: int
    scope: str = "address"  # "aor": one endpoint (that AOR from that address) only

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class _Recorder(EventLog):
    """The guard's event log during a replay: keeps each ban and suspension as a Decision."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__(io.StringIO(), json_mode=True)
        self.clock = clock
        self.first = 0.0
        self.decisions: list[Decision] = []

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        if event in ("ban", "suspend"):
            now = self.clock()
            self.decisions.append(Decision(
                now, round(now - self.first, 3), fields["ip"], fields["kind"], fields["reason"],
                fields.get("aor"), fields.get("failures", 0), fields["seconds"],
                fields.get("scope") or "address"))
        return super().emit(event, **fields)


@dataclass
class ReplayReport:
    """What the replay saw and decided."""

    packets: int
    sip_packets: int
    first: float | None
    last: float | None
    decisions: list[Decision]
    verdicts: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {"packets": self.packets, "sip_packets": self.sip_packets, "first": self.first,
                "last": self.last, "decisions": [d.as_dict() for d in self.decisions],
                "verdicts": self.verdicts}


def _hook(packet: bytes, ports: frozenset[int]) -> int:
    """Which way a captured packet went. Offline, only the packet can tell: requests to a SIP
    port come from clients, anything else from a SIP port is the registrar's. (The live guard
    never guesses from ports: the kernel's hook or the rules' mark tell it.)"""
    pkt = parse_packet(packet)
    if pkt is not None and pkt.sport in ports and (
            pkt.dport not in ports or pkt.payload[:8] == b"SIP/2.0 "):
        return HOOK_LOCAL_OUT
    return HOOK_LOCAL_IN


def replay(cfg: Config, path: str | Path) -> ReplayReport:
    """Run the policy over the capture at path."""
    cfg = dataclasses.replace(cfg, sip=SipConfig(ports=cfg.sip.ports,
                                                 transports=cfg.sip.transports, mode="local"))
    ports = frozenset(cfg.sip.ports)
    clock = _Clock()
    events = _Recorder(clock)
    store = Store(":memory:")
    # a capture holds no guard tokens: the registrar's nonce stands in as proof of address
    guard = Guard(cfg, sets=_NoSets(), store=store, events=events, clock=clock, wall=clock,
                  prove_by_nonce=True)
    packets = sip_packets = 0
    first: float | None = None
    try:
        with open(path, "rb") as handle:
            for ts, packet in read_pcap(handle):
                packets += 1
                if first is None:
                    first = events.first = ts
                clock.now = ts
                before = guard.counters.total()
                guard.handle(packet, _hook(packet, ports))
                if guard.counters.total() != before:
                    sip_packets += 1
    except OSError as exc:
        raise PcapError(f"{path}: {exc.strerror or exc}") from None
    finally:
        store.close()
    return ReplayReport(packets, sip_packets, first, clock.now if packets else None,
                        events.decisions, dict(guard.counters))
