"""``floodguard replay FILE``: run the policy over a capture offline and say what it would ban.

Reads classic pcap (tcpdump's) and pcapng (Wireshark's and dumpcap's) files; capture.py holds
the readers. Each packet goes through the same guard code as live traffic, with the capture's
timestamps as the clock, so the bans listed are the ones the live guard would have made on that
traffic.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from floodguard.capture import Capture, PcapError
from floodguard.config import Config, SipConfig
from floodguard.events import EventLog
from floodguard.guard import HOOK_LOCAL_IN, HOOK_LOCAL_OUT, Guard
from floodguard.packet import Packet, parse_packet
from floodguard.store import Store


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
    truncated: str | None = None  # the file ends inside a record: where (Capture.truncated)

    def as_dict(self) -> dict[str, Any]:
        return {"packets": self.packets, "sip_packets": self.sip_packets, "first": self.first,
                "last": self.last, "decisions": [d.as_dict() for d in self.decisions],
                "verdicts": self.verdicts, "truncated": self.truncated}


def _hook(pkt: Packet, ports: frozenset[int]) -> int:
    """Which way a captured packet went. Offline, only the packet can tell: requests to a SIP
    port come from clients, anything else from a SIP port is the registrar's. (The live guard
    never guesses from ports: the kernel's hook or the rules' mark tell it.)"""
    if pkt.sport in ports and (pkt.dport not in ports or pkt.payload[:8] == b"SIP/2.0 "):
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
            capture = Capture(handle)
            for ts, packet in capture:
                packets += 1
                if first is None:
                    first = events.first = ts
                clock.now = ts
                pkt = parse_packet(packet)
                if pkt is None or (pkt.sport not in ports and pkt.dport not in ports):
                    continue  # the rules queue only SIP ports' UDP and TCP to the guard
                before = guard.counters.total()
                guard.handle(packet, _hook(pkt, ports))
                if guard.counters.total() != before:
                    sip_packets += 1
    except OSError as exc:
        raise PcapError(f"{path}: {exc.strerror or exc}") from None
    finally:
        store.close()
    return ReplayReport(packets, sip_packets, first, clock.now if packets else None,
                        events.decisions, dict(guard.counters), capture.truncated)
