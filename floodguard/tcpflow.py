"""TCP reassembly for the guard: every SIP message of a TCP flow is judged exactly once, however
the peer splits, pipelines or retransmits it.

Judging each segment on its own let a guesser escape: a REGISTER written in two ``send()``
calls, six REGISTERs pipelined in one segment, or a 401 split by a small MSS were never read
whole. ``FlowTable`` keeps, per connection (client address and port, server address and port):

- the client's byte stream in sequence order; a segment that leaves a gap is dropped (the
  sender retransmits it once the gap is filled), so messages are framed in the order the
  registrar's TCP stack delivers them;
- the client bytes the registrar has not acknowledged yet: a retransmission must repeat them
  byte for byte. Different bytes for a sequence range already judged (the "bad checksum, then
  the real segment" desynchronisation) are dropped and the flow is cut, so what the guard
  judged and what the registrar reads never differ;
- the registrar's answers, framed the same way, for learning.

Memory is bounded: at most ``max_flows`` flows and ``max_bytes`` buffered in all (least recently
used flows go first), each stream buffer at most one message (``MAX_MESSAGE``), idle flows
expire. A flow first seen in the middle (the guard started after the connection, or the flow
was evicted) is read from the first segment that begins with a SIP start line.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from floodguard.packet import FIN, RST, SYN
from floodguard.sip.message import (
    MAX_MESSAGE,
    SipMessage,
    SipParseError,
    is_start_line,
    parse_message,
)

_MOD = 1 << 32
_HALF = 1 << 31
_WAIT = ("incomplete", "truncated_body")
# Unacknowledged client bytes kept for comparing retransmissions; beyond this the oldest are
# forgotten and a retransmission into them is treated as a desynchronisation.
MAX_UNACKED = 2 * MAX_MESSAGE

FlowKey = tuple[str, int, str, int]  # client address, client port, server address, server port


def _delta(a: int, b: int) -> int:
    """a - b in 32-bit sequence space, as a signed number."""
    return (a - b + _HALF) % _MOD - _HALF


@dataclass(slots=True)
class Flow:
    """One connection's reassembly state."""

    next_in: int
    unacked_seq: int
    syncing: bool
    seen: float
    unacked: bytearray = field(default_factory=bytearray)
    in_buf: bytearray = field(default_factory=bytearray)
    next_out: int | None = None
    out_buf: bytearray = field(default_factory=bytearray)
    dead: bool = False

    def size(self) -> int:
        return len(self.unacked) + len(self.in_buf) + len(self.out_buf)


class FlowTable:
    """Reassembles both directions of each TCP flow; see the module docstring."""

    def __init__(self, max_flows: int = 65536, max_bytes: int = 64 << 20,
                 idle: float = 900.0) -> None:
        self.max_flows = max_flows
        self.max_bytes = max_bytes
        self.idle = idle
        self.bytes = 0
        self.evicted = 0
        self._flows: OrderedDict[FlowKey, Flow] = OrderedDict()

    def __len__(self) -> int:
        return len(self._flows)

    # ------------------------------------------------------------ bookkeeping

    def _get(self, key: FlowKey, now: float) -> Flow | None:
        flow = self._flows.get(key)
        if flow is None:
            return None
        if now - flow.seen > self.idle:
            self._forget(key)
            return None
        flow.seen = now
        self._flows.move_to_end(key)
        return flow

    def _add(self, key: FlowKey, flow: Flow) -> Flow:
        self._forget(key)
        self._flows[key] = flow
        while len(self._flows) > self.max_flows:
            self._evict()
        return flow

    def _forget(self, key: FlowKey) -> None:
        flow = self._flows.pop(key, None)
        if flow is not None:
            self.bytes -= flow.size()

    def _evict(self) -> None:
        oldest = next(iter(self._flows))
        self._forget(oldest)
        self.evicted += 1

    def _grew(self, key: FlowKey, before: int, flow: Flow) -> None:
        self.bytes += flow.size() - before
        while self.bytes > self.max_bytes and self._flows:
            if next(iter(self._flows)) == key and len(self._flows) == 1:
                break
            self._evict()

    def kill(self, key: FlowKey) -> None:
        """Cut a flow: every later segment of it is dropped (until a new SYN)."""
        flow = self._flows.get(key)
        if flow is not None:
            self.bytes -= flow.size()
            flow.dead = True
            flow.unacked = bytearray()
            flow.in_buf = bytearray()
            flow.out_buf = bytearray()

    # ------------------------------------------------------------ client -> registrar

    def inbound(self, now: float, key: FlowKey, seq: int, flags: int,
                data: bytes) -> tuple[str, list[SipMessage]]:
        """A client segment: ("ok", complete new messages), or ("drop:<reason>", messages
        framed before the problem). A retransmission of bytes already judged is ("ok", [])."""
        if flags & RST:
            self._forget(key)
            return "ok", []
        if flags & SYN:
            self._add(key, Flow((seq + 1) % _MOD, (seq + 1) % _MOD, False, now))
            return "ok", []
        flow = self._get(key, now)
        if flow is None:
            if not data:
                return "ok", []
            flow = self._add(key, Flow(seq, seq, True, now))
        if flow.dead:
            return "drop:tcp-cut", []
        if not data:
            if flags & FIN:
                flow.next_in = (flow.next_in + 1) % _MOD if _delta(seq, flow.next_in) == 0 \
                    else flow.next_in
            return "ok", []
        d = _delta(seq, flow.next_in)
        if d > 0:
            return "drop:tcp-gap", []
        before = flow.size()
        old = len(data) if d + len(data) <= 0 else -d
        if old and not self._repeats(flow, seq, data[:old]):
            self.kill(key)
            return "drop:tcp-desync", []
        new = data[old:]
        if not new:
            return "ok", []
        flow.next_in = (flow.next_in + len(new)) % _MOD
        flow.unacked += new
        if len(flow.unacked) > MAX_UNACKED:
            cut = len(flow.unacked) - MAX_UNACKED
            del flow.unacked[:cut]
            flow.unacked_seq = (flow.unacked_seq + cut) % _MOD
        if flow.syncing:
            if not _starts_message(new):
                self._grew(key, before, flow)
                return "ok:resync", []
            flow.syncing = False
        flow.in_buf += new
        status, messages = self._frame(flow.in_buf)
        self._grew(key, before, flow)
        if status != "ok":
            self.kill(key)
        return status, messages

    def _repeats(self, flow: Flow, seq: int, data: bytes) -> bool:
        """Do these bytes equal what was already accepted at seq (where it is still known)?"""
        offset = _delta(seq, flow.unacked_seq)
        if offset < 0:
            if -offset >= len(data):
                return True  # acknowledged already: the registrar's stack discards it
            data = data[-offset:]
            offset = 0
        return flow.unacked[offset:offset + len(data)] == data

    # ------------------------------------------------------------ registrar -> client

    def outbound(self, now: float, key: FlowKey, seq: int, ack: int, flags: int,
                 data: bytes) -> list[SipMessage]:
        """A registrar segment towards the client of ``key``: its complete new answers."""
        flow = self._get(key, now)
        if flags & RST:
            self._forget(key)
            return []
        if flow is None:
            if not data and not flags & SYN:
                return []
            flow = self._add(key, Flow(0, 0, True, now))
            if not flags & SYN:
                flow.next_out = seq
        if flow.dead:
            return []
        acked = _delta(ack, flow.unacked_seq)
        if 0 < acked <= len(flow.unacked):
            before = flow.size()
            del flow.unacked[:acked]
            flow.unacked_seq = ack % _MOD
            self._grew(key, before, flow)
        if flags & SYN:
            flow.next_out = (seq + 1) % _MOD
            return []
        if not data or flow.next_out is None:
            return []
        d = _delta(seq, flow.next_out)
        before = flow.size()
        if d > 0:  # a gap in our own output: start again after it
            flow.out_buf.clear()
            d = 0
            flow.next_out = seq
        new = data[-d:] if d < 0 else data
        if d < 0 and -d >= len(data):
            return []
        flow.next_out = (flow.next_out + len(new)) % _MOD
        flow.out_buf += new
        status, messages = self._frame(flow.out_buf)
        if status != "ok":
            flow.out_buf.clear()
        self._grew(key, before, flow)
        return messages

    # ------------------------------------------------------------ framing

    @staticmethod
    def _frame(buf: bytearray) -> tuple[str, list[SipMessage]]:
        """Take every complete message off the front of buf."""
        messages: list[SipMessage] = []
        while buf:
            try:
                msg = parse_message(bytes(buf), stream=True)
            except SipParseError as exc:
                if exc.reason == "empty":  # CRLF keep-alives only
                    buf.clear()
                    break
                if exc.reason in _WAIT and len(buf) < MAX_MESSAGE:
                    break
                return f"drop:malformed:{exc.reason}", messages
            messages.append(msg)
            del buf[:msg.length]
        return "ok", messages


def _starts_message(data: bytes) -> bool:
    """Does a segment seen mid-flow begin with a whole SIP start line?"""
    line, newline, _ = data.lstrip(b"\r\n").partition(b"\n")
    return bool(newline) and is_start_line(line.removesuffix(b"\r"))
