"""Lightweight liveness checks (VOS3000 SS_ENDPOINTTIMETOLIVE): OPTIONS to every bound contact.

Each binding is probed once per `interval`. Bindings get evenly spaced phases within the interval
(a golden-ratio sequence), so 10,000 bindings at 60 s are ~167 OPTIONS every second rather than
one burst. A probe over UDP is retransmitted on the RFC 3261 schedule (T1 = 500 ms, doubling)
and given up after `give_up` seconds (4 s: sends at 0, 0.5, 1.5 and 3.5 s); any SIP response
marks the binding online, giving up marks it offline at once even though it has not expired.
A later answer or a re-REGISTER brings it back.

The class is driven by `tick` with times passed in, so tests run it on a fake clock.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from dataclasses import dataclass
from typing import Protocol

from floodguard.registrar.bindings import Binding, BindingTable
from floodguard.registrar.responses import BRANCH_MAGIC, new_token, options_request
from floodguard.sip.message import SipMessage

log = logging.getLogger("floodguard.registrar.liveness")

_PHI = 0.6180339887498949
BRANCH_PREFIX = BRANCH_MAGIC + "fgl"
LATE_ANSWER_WINDOW = 32.0  # 64*T1: after that no answer to a probe can still be in flight


class Sender(Protocol):
    """How probes reach a binding: the server implements this."""

    def local_address(self, binding: Binding) -> tuple[str, int] | None:
        """Our address as the binding sees it (for the Via), None when unreachable."""
        ...

    def send(self, binding: Binding, data: bytes) -> bool:
        """Send bytes to the binding's source over its transport; False when impossible."""
        ...


@dataclass(slots=True)
class _Probe:
    key: tuple[str, str]
    data: bytes
    sent_at: float
    reliable: bool
    sends: int = 1


class Liveness:
    """Schedules OPTIONS probes and tracks their answers."""

    def __init__(
        self,
        table: BindingTable,
        sender: Sender,
        interval: float,
        *,
        t1: float = 0.5,
        give_up: float = 4.0,
    ) -> None:
        self.table = table
        self.sender = sender
        self.interval = float(interval)
        self.t1 = t1
        self.give_up = give_up
        self._due: list[tuple[float, int, tuple[str, str]]] = []
        self._scheduled: dict[tuple[str, str], float] = {}
        self._timers: list[tuple[float, int, str]] = []
        self._probes: dict[str, _Probe] = {}
        # Probes given up on, kept a while so a late answer still counts as "online".
        self._late: dict[str, tuple[tuple[str, str], float]] = {}
        self._answered: dict[tuple[str, str], float] = {}
        self._seq = itertools.count()
        self._phase = 0
        self.sent = 0
        self.answers = 0
        self.timeouts = 0

    def __len__(self) -> int:
        return len(self._scheduled)

    @property
    def in_flight(self) -> int:
        return len(self._probes)

    def track(self, key: tuple[str, str], now: float) -> None:
        """Start probing a binding (no-op when it is already scheduled)."""
        if key in self._scheduled:
            return
        self._phase += 1
        due = now + self.interval * ((self._phase * _PHI) % 1.0)
        self._scheduled[key] = due
        heapq.heappush(self._due, (due, next(self._seq), key))

    def alive(self, key: tuple[str, str], now: float) -> None:
        """The endpoint just proved it is alive (it re-registered)."""
        self._answered[key] = now

    def tick(self, now: float, wall: float) -> None:
        """Send the probes that are due, retransmit, and give up on silent endpoints."""
        due = self._due
        while due and due[0][0] <= now:
            at, _, key = heapq.heappop(due)
            if self._scheduled.get(key) != at:
                continue
            binding = self.table.get(key)
            if binding is None or binding.expires_at <= wall:
                del self._scheduled[key]
                self._answered.pop(key, None)
                continue
            self._probe(binding, now)
            following = at + self.interval
            if following <= now:  # fell behind (e.g. the process was stopped): no catch-up burst
                following = now + self.interval * ((next(self._seq) * _PHI) % 1.0)
            self._scheduled[key] = following
            heapq.heappush(due, (following, next(self._seq), key))
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, branch = heapq.heappop(timers)
            probe = self._probes.get(branch)
            if probe is None:
                late = self._late.get(branch)
                if late is not None and late[1] <= now:
                    del self._late[branch]
                continue
            if now - probe.sent_at >= self.give_up - 1e-9:
                del self._probes[branch]
                self.timeouts += 1
                self._offline(probe, wall)
                until = now + LATE_ANSWER_WINDOW
                self._late[branch] = (probe.key, until)
                heapq.heappush(timers, (until, next(self._seq), branch))
                continue
            binding = self.table.get(probe.key)
            if binding is None:
                del self._probes[branch]
                continue
            self.sender.send(binding, probe.data)
            probe.sends += 1
            self._arm(branch, probe)

    def _arm(self, branch: str, probe: _Probe) -> None:
        if probe.reliable:
            at = probe.sent_at + self.give_up
        else:
            # Retransmit at T1, 3*T1, 7*T1 ... after the first send (intervals doubling).
            at = min(probe.sent_at + self.t1 * (2**probe.sends - 1), probe.sent_at + self.give_up)
        heapq.heappush(self._timers, (at, next(self._seq), branch))

    def _probe(self, binding: Binding, now: float) -> None:
        local = self.sender.local_address(binding)
        branch = BRANCH_PREFIX + new_token(8)
        probe = _Probe(binding.key, b"", now, binding.transport != "udp")
        if local is not None:
            probe.data = options_request(
                binding.contact, local[0], local[1], binding.transport, branch,
                new_token(8) + "@floodguard", new_token(4),
            )
            if not self.sender.send(binding, probe.data):
                probe.reliable = True  # nothing to retransmit on: just wait out the timeout
        else:
            probe.reliable = True
        self._probes[branch] = probe
        self.sent += 1
        self._arm(branch, probe)

    def on_response(self, msg: SipMessage, now: float, wall: float) -> bool:
        """Match a response to a probe; any response means the endpoint is online."""
        branch = msg.via_branch
        if not branch or not branch.startswith(BRANCH_PREFIX):
            return False
        probe = self._probes.pop(branch, None)
        if probe is not None:
            key = probe.key
        else:
            late = self._late.pop(branch, None)
            if late is None:
                return True  # a duplicate answer: ours, nothing more to learn
            key = late[0]
        self.answers += 1
        self._answered[key] = now
        binding = self.table.get(key)
        if binding is not None:
            binding.last_seen = wall
            if not binding.online:
                binding.online = True
                log.info("%s %s online again (answered OPTIONS)", binding.aor, binding.contact,
                         extra={"event": "binding_online",
                                "fields": {"aor": binding.aor, "contact": binding.contact}})
            self.table.touch(binding)
        return True

    def _offline(self, probe: _Probe, wall: float) -> None:
        binding = self.table.get(probe.key)
        if binding is None or not binding.online:
            return
        if self._answered.get(probe.key, float("-inf")) >= probe.sent_at:
            return  # it answered a later probe or re-registered meanwhile
        binding.online = False
        self.table.touch(binding)
        log.info("%s %s offline: no answer to OPTIONS within %.1f s",
                 binding.aor, binding.contact, self.give_up,
                 extra={"event": "binding_offline",
                        "fields": {"aor": binding.aor, "contact": binding.contact}})
