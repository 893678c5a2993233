"""The guard: NFQUEUE packets -> fast parse -> policy engine -> verdict, kernel sets, state store.

One ``Guard`` runs per queue (worker process). It sees clients' requests coming in and the
registrar's responses going out, so it learns proven failures from any registrar. Every ban is
written to the kernel ban set with its timeout at once, so the next packet from that source is
dropped in raw PREROUTING and never reaches userspace.

This module is the per-packet path; the guard's state and periodic work are in guard_state.py,
and what it does with the engine's actions (enforce, or log in monitor mode) in
guard_actions.py.
"""

from __future__ import annotations

import socket
import time

from floodguard.guard_state import SHARED_NONCE_REPORT_EVERY, GuardState
from floodguard.kernel.nfqueue import COPY_RANGE
from floodguard.packet import Packet, parse_packet, replace_udp_payload
from floodguard.policy.verdict import Verdict
from floodguard.policy.views import SipView
from floodguard.sip._scan import scan_packet
from floodguard.sip.message import SipParseError, parse_message
from floodguard.sip.proof import (
    CHECK,
    NO_PROOF,
    PROVEN,
    check_credentials,
    may_prove,
    tokenise,
)
from floodguard.sip.proof import PREFIX as PROOF_PREFIX

HOOK_LOCAL_IN = 1
HOOK_FORWARD = 2
HOOK_LOCAL_OUT = 3

MAX_OFFENDERS = 4096
TOKEN_MARK = PROOF_PREFIX
SHARED_NONCE_HINT = (
    "the registrar gives several clients the same nonce; floodguard does not rely on nonces "
    "(its own token in the digest opaque proves receipt), but replay protection does: "
    "Kamailio: modparam(\"auth\", \"auth_checks_register\", 11) with a secret; Asterisk: "
    "nonce_lifetime cannot fix it, put floodguard's registrar or Kamailio in front")


class Guard(GuardState):
    """Policy for one queue: ``handle(payload, hook) -> accept?`` plus periodic housekeeping."""

    # ------------------------------------------------------------------ per packet

    def handle(self, payload: bytes, hook: int) -> bool | bytes:
        """Verdict for one packet: accept, drop, or accept with these bytes instead (a challenge
        with the guard's proof token, a REGISTER with the registrar's opaque put back or with
        unproven credentials taken out)."""
        self._t0 = time.perf_counter()
        size = len(payload)
        if size > 40 and size < COPY_RANGE:
            version = payload[0] >> 4
            if (payload[9] if version == 4 else payload[6] if version == 6 else 0) == 6:
                return self._tcp(payload, hook)
        if size >= self.udp_oversize:
            return self._large(payload, hook)
        fast = scan_packet(payload)
        if fast is None:
            return self._handle_general(payload, hook)
        src, dst, proto, sport, dport, msg = fast
        inbound = hook != HOOK_LOCAL_OUT
        return self._judge(self.clock(), src, dst, inbound, msg, payload, proto == "tcp",
                           sport if inbound else dport)

    def _handle_general(self, payload: bytes, hook: int) -> bool | bytes:
        """Every packet the C scan leaves to the Python parsers (same results, more cases)."""
        pkt = parse_packet(payload)
        if pkt is None:
            return self._unreadable(payload)
        if pkt.proto == "tcp":
            return self._tcp_segment(pkt, hook)
        now = self.clock()
        body = pkt.payload
        inbound = self._inbound(pkt.sport, pkt.dport, body, hook)
        if not body:
            return True  # TCP handshakes and ACKs: the kernel's SYN and connection limits apply
        try:
            msg = parse_message(body)
        except SipParseError as exc:
            if pkt.proto == "tcp" or not inbound:
                # a TCP segment that does not start a whole message (or our own output) is never
                # judged on its own: it cannot be mis-read as a failure
                self.counters[f"pass:partial:{exc.reason}"] += 1
                return True
            key = self._key(pkt.src)
            self.health.arrival(not self.engine.is_known(now, key))
            return self._finish(self.engine.on_unparseable(now, key, exc.reason), key)
        return self._judge(now, pkt.src, pkt.dst, inbound, msg, payload, pkt.proto == "tcp",
                           pkt.sport if inbound else pkt.dport)

    def _tcp(self, payload: bytes, hook: int) -> bool | bytes:
        pkt = parse_packet(payload)
        if pkt is None:
            return self._unreadable(payload)
        return self._tcp_segment(pkt, hook)

    def _tcp_segment(self, pkt: Packet, hook: int) -> bool:
        """A TCP segment: reassembled with the rest of its flow, every complete message in it
        judged once. A drop of any of them (or a gap, a desynchronising retransmission,
        malformed data) cuts the flow: its later segments are dropped too."""
        now = self.clock()
        body = pkt.payload
        if self._inbound(pkt.sport, pkt.dport, body, hook):
            key = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
            status, messages = self.flows.inbound(now, key, pkt.seq, pkt.tcp_flags, body)
            accept = True
            for msg in messages:
                if self._judge(now, pkt.src, pkt.dst, True, msg, b"", True, 0) is False:
                    accept = False
            if status.startswith("drop:"):
                self.counters[("would-drop:" if self.monitor else "drop:") + status[5:]] += 1
                return self.monitor
            if not accept:
                self.flows.kill(key)
                self.counters["tcp:cut"] += 1
            return accept
        key = (pkt.dst, pkt.dport, pkt.src, pkt.sport)
        for msg in self.flows.outbound(now, key, pkt.seq, pkt.ack, pkt.tcp_flags, body):
            self._judge(now, pkt.src, pkt.dst, False, msg, b"", True, 0)
        return True

    @staticmethod
    def _inbound(sport: int, dport: int, body: bytes, hook: int) -> bool:
        """A client's packet, else the registrar's output: by the hook, never by ports (anyone
        can send from port 5060). In forward mode the queue binding reports what the rules
        marked as arriving from the registrar's side with the LOCAL_OUT hook."""
        return hook != HOOK_LOCAL_OUT


    def _judge(self, now: float, src: str, dst: str, inbound: bool, msg: SipView,
               payload: bytes, tcp: bool, port: int) -> bool | bytes:
        """One SIP message; ``port`` is the client's (0 over TCP)."""
        peer = dst
        if inbound:
            src = self._key(src)
        else:
            dst = self._key(dst)
        if inbound:
            if msg.is_request:
                proven = tcp  # a TCP source completed a handshake: its address is real
                rewritten: bytes | None = None
                unproven = False  # UDP credentials without the guard's token for src
                if msg.method == "REGISTER":
                    self.registers += 1
                    self.share.add("register", src)
                    auth = msg.authorization
                    if tcp or auth is None:
                        pass
                    elif self.prove_by_nonce:
                        proven = bool(auth.nonce) and self.engine.nonce_holder(
                            now, auth.nonce or "") == src
                    else:
                        # cheap looks first: a flood carries no token, or not a valid one
                        look = may_prove(payload, src, auth.nonce, self.proof) \
                            if TOKEN_MARK in payload else NO_PROOF
                        if look == PROVEN:
                            proven = True
                        elif look == CHECK:
                            proven, rewritten = self._prove(payload, src)
                        unproven = not proven
                verdict = self.engine.on_request(now, src, msg, proven)
                self.health.arrival(not verdict.known)
                accept = self._finish(verdict, src)
                if not verdict.accept:
                    return accept
                if proven:
                    result: bool | bytes = rewritten if rewritten is not None else accept
                elif not unproven or self.monitor or verdict.reason == "allow":
                    result = accept  # monitor mode and trusted sources: never altered
                else:
                    result = self._unproven(now, payload, src, rewritten, verdict.known)
                if result is not False:
                    self._admitted(src, msg)
                return result
            if self.engine.is_banned(now, src):
                self.counters["drop:banned"] += 1
                return False
            self.counters["pass:response-in"] += 1
            return True
        if not msg.is_request:
            status = msg.status
            if status == 401:
                self.share.add("401", dst)
            if status is not None and status >= 200:
                call_id, cseq = msg.call_id, msg.cseq_num
                if call_id is not None and cseq is not None:
                    self.health.response(self.meter_clock(), dst, call_id, cseq)
            verdict = self.engine.on_response(now, dst, msg)
            self.counters["pass:response-out"] += 1
            if verdict.actions:
                # where a 2xx went is where its pair registers from (a lockdown's pass entry)
                self.actions.answering = (peer, port) if not tcp and port else None
                self.apply(verdict.actions)
                self.actions.answering = None
            if (msg.status == 401 or msg.status == 407) and not tcp and not self.prove_by_nonce:
                return self._tokenise(payload, dst)
            return True
        self.counters["pass:request-out"] += 1
        return True

    def _admitted(self, src: str, msg: SipView) -> None:
        """A REGISTER or OPTIONS on its way to the registrar: timed until its final answer (the
        registrar's measured health drives the admission rate)."""
        method = msg.method
        if method != "REGISTER" and method != "OPTIONS":
            return
        call_id, cseq = msg.call_id, msg.cseq_num
        if call_id is not None and cseq is not None:
            self.health.request(self.meter_clock(), src, call_id, cseq)

    def _unproven(self, now: float, payload: bytes, src: str,
                  stripped: bytes | None, known: bool) -> bool | bytes:
        """Credentials without proof never reach the registrar. They answer no challenge this
        source received: a spoofed packet or a replay, dropped. Two exceptions, within a budget
        of such rewrites per second, get their credentials taken out instead (the registrar
        challenges afresh): a known-good source, and any source during the first
        registration period after the guard's first start (``registrar.expire``: a phone
        still holding a nonce from before floodguard needs it once)."""
        if (known or self.wall() < self._first_period_ends) and self._strips.take(now):
            if stripped is None:
                stripped = self._prove(payload, src)[1]
            if stripped is not None:
                self.counters["proof:stripped"] += 1
                return stripped
        self.counters["drop:unproven"] += 1
        return False

    def _prove(self, payload: bytes, src: str) -> tuple[bool, bytes | None]:
        """(proven, rewritten packet) for a UDP REGISTER with credentials: proven when they
        carry the guard's token for src (the registrar's opaque then goes back in); otherwise
        the packet without its credentials, so the guess never reaches the registrar."""
        pkt = parse_packet(payload)
        if pkt is None:
            return False, None
        proven, sip = check_credentials(pkt.payload, src, self.proof)
        if sip is None:
            return proven, None
        return proven, replace_udp_payload(payload, sip)

    def _tokenise(self, payload: bytes, client: str) -> bool | bytes:
        """A 401/407 going out over UDP, with the guard's proof token in each challenge."""
        if self.engine.stats_value("shared_nonces") and (
                self.clock() - self._shared_reported >= SHARED_NONCE_REPORT_EVERY):
            self._shared_reported = self.clock()
            self.events.emit("registrar_shared_nonces",
                             count=self.engine.stats_value("shared_nonces"),
                             hint=SHARED_NONCE_HINT)
        pkt = parse_packet(payload)
        if pkt is None:
            return True
        sip = tokenise(pkt.payload, client, self.proof)
        out = None if sip is None else replace_udp_payload(payload, sip)
        if out is None:
            self.counters["proof:untokenised"] += 1
            return True
        self.counters["proof:tokenised"] += 1
        return out

    def _large(self, payload: bytes, hook: int) -> bool | bytes:
        """A packet of ``limits.udp_oversize`` bytes or more: inbound over UDP, dropped "oversize"
        unread; anything else read as usual unless the queue cut it short (over COPY_RANGE
        bytes), then it is judged by its source alone."""
        if len(payload) < COPY_RANGE:
            pkt = parse_packet(payload)
            if pkt is None:
                return self._unreadable(payload)
            if pkt.proto == "udp" and self._inbound(pkt.sport, pkt.dport, pkt.payload, hook):
                return self._by_source(self._key(pkt.src), tcp=False)
            return self._handle_general(payload, hook)
        return self._unreadable(payload)

    def _unreadable(self, payload: bytes) -> bool | bytes:
        """A packet parse_packet refused, or one the queue cut at COPY_RANGE bytes: a long enough
        one is judged by the source in its IP header, anything else is malformed."""
        if len(payload) >= self.udp_oversize:
            version = payload[0] >> 4
            raw = payload[12:16] if version == 4 else payload[8:24] if version == 6 else b""
            if raw and len(raw) in (4, 16):
                src = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
                proto = payload[9] if version == 4 else payload[6]
                return self._by_source(self._key(src), tcp=proto == socket.IPPROTO_TCP)
        self.counters["drop:malformed:ip"] += 1
        return self.monitor

    def _by_source(self, src: str, *, tcp: bool) -> bool:
        """A large packet not read as SIP: allow-listed sources pass, banned ones are dropped,
        a TCP segment passes (the kernel's limits counted it), a UDP one is "oversize"."""
        if self.engine.is_allowed(src):
            self.counters["pass:allow"] += 1
            return True
        if self.engine.is_banned(self.clock(), src):
            reason = "banned"
        elif tcp:
            self.counters["pass:truncated"] += 1
            return True
        else:
            reason = "oversize"
        self.counters[("would-drop:" if self.monitor else "drop:") + reason] += 1
        return self.monitor

    def _finish(self, verdict: Verdict, src: str) -> bool:
        if verdict.accept:
            self.counters["pass:" + verdict.reason] += 1
        else:
            self.counters[("would-drop:" if self.monitor else "drop:") + verdict.reason] += 1
            offenders = self.offenders
            offenders[src] = offenders.get(src, 0) + 1
            self.last_drop[src] = verdict.reason
            if len(offenders) > MAX_OFFENDERS:
                # keep the heaviest half: a bounded, approximate top list
                keep = sorted(offenders.items(), key=lambda kv: kv[1])[len(offenders) // 2:]
                self.offenders = dict(keep)
                self.last_drop = {ip: self.last_drop[ip] for ip, _ in keep
                                  if ip in self.last_drop}
        if verdict.actions:
            self.apply(verdict.actions)
        return verdict.accept or self.monitor

    # ------------------------------------------------------------------ actions

