"""SIP traffic for bench_guard.py: the registration mix, IPv4/UDP crafting, and the senders.

Imported by bench_guard.py (to build recorded packets for in-process profiling) and run as a
helper inside the bench's client namespace::

    guardbench_traffic.py mix   --server-ns NAME ...   # throughput: requests in, responses out
    guardbench_traffic.py spoof --server-ns NAME ...   # memory: N distinct spoofed sources

Packets are crafted with ``struct`` (no scapy: it could not offer enough load). Requests leave
a raw IP_HDRINCL socket in the client namespace with spoofed source addresses; responses are
sent by a UDP socket bound to the server's SIP port inside the server namespace, so they cross
its OUTPUT hook exactly like a registrar's answers. The process opens its client-side socket
first, then moves itself into the server namespace with setns(2).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ipaddress
import json
import os
import socket
import struct
import sys
import time
from dataclasses import dataclass

from floodguard.sip import build, digest
from floodguard.sip.proof import ProofKey

SERVER = "10.250.0.1"
CLIENT = "10.250.0.2"
# Spoofed sources live outside the lab's 10.250.0.0/16 link: the server routes 10.0.0.0/8 to
# the client, so answers to them leave without neighbour resolution.
MIX_BASE = "10.251.0.0"
SPOOF_BASE = "10.1.0.0"
SIP_PORT = 5060
REALM = SERVER
ALLOW = "Allow: INVITE, ACK, OPTIONS, CANCEL, BYE, REFER, NOTIFY, INFO, UPDATE, MESSAGE"
HOOK_IN = 1  # NF_INET_LOCAL_IN, as netfilterqueue reports it
HOOK_OUT = 3  # NF_INET_LOCAL_OUT
CLONE_NEWNET = 0x40000000

_ip_header = struct.Struct("!BBHHHBBH4s4s")
_udp_header = struct.Struct("!HHHH")


@dataclass(frozen=True, slots=True)
class Wire:
    """One packet of the mix: which way it goes, its addresses and its SIP payload."""

    inbound: bool  # request from a client (True) or registrar response to it (False)
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


# ---------------------------------------------------------------- crafting


def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes, ident: int = 0) -> bytes:
    """A complete IPv4/UDP datagram (UDP checksum 0: optional over IPv4)."""
    udp_len = 8 + len(payload)
    src_b, dst_b = socket.inet_aton(src), socket.inet_aton(dst)
    head = _ip_header.pack(0x45, 0, 20 + udp_len, ident & 0xFFFF, 0x4000, 64, 17, 0, src_b, dst_b)
    head = head[:10] + struct.pack("!H", checksum(head)) + head[12:]
    return head + _udp_header.pack(sport, dport, udp_len, 0) + payload


def source_address(index: int, base: str) -> str:
    """The index-th address after ``base``."""
    return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address(base)) + index))


def _nonce(index: int, round_: int) -> str:
    return f"Z{index:07x}{round_:04x}0a1b2c3d4e5f60718293a4b5c6d7e8f9"


def register(src: str, sport: int, user: str, call_id: str, cseq: int, *,
             nonce: str | None = None, agent: str = "Yealink SIP-T46S 66.85.0.5",
             opaque: str | None = None) -> bytes:
    """A REGISTER as a desk phone sends it; with ``nonce`` it carries a digest Authorization
    (a random password: the mix's registrar answers are recorded, not computed)."""
    auth = None if nonce is None else digest.authorization_header(
        user, os.urandom(8).hex(), REALM, nonce, f"sip:{SERVER}", "REGISTER",
        cnonce=os.urandom(4).hex(), opaque=opaque)
    return build.register(
        SERVER, user=user, local=f"{src}:{sport}", call_id=call_id, cseq=cseq,
        contacts=[f"<sip:{user}@{src}:{sport};transport=udp>;expires=600"], expires=600,
        user_agent=agent, authorization=auth, headers=[ALLOW], branch=_branch(call_id, cseq),
        tag=call_id[:8], display=user)


def _branch(call_id: str, cseq: int) -> str:
    return f"z9hG4bK{cseq:x}{call_id[:10]}"


def response(status: int, src: str, sport: int, user: str, call_id: str, cseq: int, *,
             nonce: str | None = None, expires: int = 600) -> bytes:
    """A registrar's answer to the REGISTER above (401 with a challenge, or 200 OK)."""
    headers = []
    if status == 401 and nonce is not None:
        headers.append(f'WWW-Authenticate: Digest realm="{REALM}", nonce="{nonce}", qop="auth"')
    if status == 200:
        headers.append(f"Contact: <sip:{user}@{src}:{sport};transport=udp>;expires={expires}")
    headers.append("Server: kamailio (5.6.3 (x86_64/linux))")
    return build.response(
        status, via=f"SIP/2.0/UDP {src}:{sport};branch={_branch(call_id, cseq)};rport={sport};"
        f"received={src}", from_=f'"{user}" <sip:{user}@{SERVER}>;tag={call_id[:8]}',
        to=f'"{user}" <sip:{user}@{SERVER}>;tag=b27e1a1d33761e85846fc98f5f3a7e58.{cseq:x}',
        call_id=call_id, cseq=cseq, headers=headers)


def registration_mix(sources: int, *, base: str = MIX_BASE, fail_every: int = 10,
                     rounds: int = 1, key: ProofKey | None = None) -> list[Wire]:
    """The throughput mix: per source and round, one full digest registration.

    REGISTER without credentials (in) -> 401 with a fresh nonce (out) -> REGISTER with
    Authorization for that nonce (in) -> 200 OK (out), except every ``fail_every``-th
    transaction (staggered over sources, never twice in a row for one source) answered 401:
    a proven failure. Sources never reach the suspension threshold, so the mix costs the
    full policy path throughout instead of turning into cheap "banned" drops. With the guard's
    proof ``key`` the credentials return the token the guard put into the 401, as a phone
    behind the guard does.
    """
    out: list[Wire] = []
    for round_ in range(rounds):
        for i in range(sources):
            src = source_address(i, base)
            sport = 5060 + (i % 4000)
            user = f"{1000 + i % 9000}"
            call_id = f"{i:08x}-{round_:04x}-4c2f-bench@{src}"
            cseq = 1 + 2 * round_
            nonce = _nonce(i, round_)
            fail = fail_every > 0 and (i + round_) % fail_every == 0
            out.append(Wire(True, src, sport, SERVER, SIP_PORT,
                            register(src, sport, user, call_id, cseq)))
            out.append(Wire(False, SERVER, SIP_PORT, src, sport,
                            response(401, src, sport, user, call_id, cseq, nonce=nonce)))
            token = None if key is None else key.mint(src, nonce.encode(), None).decode()
            out.append(Wire(True, src, sport, SERVER, SIP_PORT,
                            register(src, sport, user, call_id, cseq + 1, nonce=nonce,
                                     opaque=token)))
            status = 401 if fail else 200
            out.append(Wire(False, SERVER, SIP_PORT, src, sport,
                            response(status, src, sport, user, call_id, cseq + 1,
                                     nonce=_nonce(i, round_ + 1000))))
    return out


def recorded(mix: list[Wire]) -> list[tuple[bytes, int]]:
    """(IP packet, netfilter hook) pairs, exactly as NFQUEUE would hand them to the guard."""
    return [(ipv4_udp(w.src, w.dst, w.sport, w.dport, w.payload, n),
             HOOK_IN if w.inbound else HOOK_OUT) for n, w in enumerate(mix)]


def spoofed_register(index: int, base_int: int) -> tuple[str, bytes]:
    """(source, IP packet) of a REGISTER with a bogus nonce from the index-th spoofed source."""
    src = socket.inet_ntoa(struct.pack("!I", base_int + index))
    payload = register(src, 5060, f"{1000 + index % 9000}", f"{index:08x}-spoof@{src}", 1,
                       nonce=f"bogus{index:08x}")
    return src, ipv4_udp(src, SERVER, 5060, SIP_PORT, payload, index)


# ---------------------------------------------------------------- namespaces and counters


def enter_netns(name: str) -> None:
    """Move this (single-threaded) process into network namespace ``name``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def queue_counters(queue: int) -> dict[str, int]:
    """One queue's line of /proc/net/netfilter/nfnetlink_queue (this process' namespace)."""
    with open("/proc/net/netfilter/nfnetlink_queue") as fh:
        for line in fh:
            f = line.split()
            if int(f[0]) == queue:
                return {"portid": int(f[1]), "waiting": int(f[2]), "queue_dropped": int(f[5]),
                        "user_dropped": int(f[6]), "id_sequence": int(f[7])}
    return {"portid": 0, "waiting": 0, "queue_dropped": 0, "user_dropped": 0, "id_sequence": 0}


def _raw_socket() -> socket.socket:
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    return raw


def _server_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    # Also the sink for accepted requests: never read, a small buffer overflows cheaply.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.bind((SERVER, SIP_PORT))
    return sock


# ---------------------------------------------------------------- senders


def _paced(plan: list[tuple[bool, bytes, tuple[str, int]]], raw: socket.socket,
           srv: socket.socket, queue: int, window: int) -> None:
    """Send the plan once, keeping at most ``window`` packets waiting in the queue."""
    for start in range(0, len(plan), 64):
        while queue_counters(queue)["waiting"] > window:
            time.sleep(0.0005)
        for inbound, data, addr in plan[start : start + 64]:
            with contextlib.suppress(OSError):
                (raw if inbound else srv).sendto(data, addr)


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(_Iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


class _SockaddrIn(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_uint16),
                ("addr", ctypes.c_char * 4), ("zero", ctypes.c_char * 8)]


class Batch:
    """Datagrams for one socket, sent with one sendmmsg(2) call: a fraction of the
    per-packet system call cost of sendto, so one core offers several times more load."""

    def __init__(self, sock: socket.socket, items: list[tuple[bytes, tuple[str, int]]]) -> None:
        self.fd = sock.fileno()
        self.count = len(items)
        self._keep = [ctypes.create_string_buffer(data, len(data)) for data, _ in items]
        self._iov = (_Iovec * self.count)()
        self._names = (_SockaddrIn * self.count)()
        self._vec = (_Mmsghdr * self.count)()
        for i, ((data, (host, port)), buf) in enumerate(zip(items, self._keep, strict=True)):
            self._iov[i].base = ctypes.addressof(buf)
            self._iov[i].len = len(data)
            self._names[i].family = socket.AF_INET
            self._names[i].port = socket.htons(port)
            self._names[i].addr = socket.inet_aton(host)
            hdr = self._vec[i].hdr
            hdr.name = ctypes.addressof(self._names[i])
            hdr.namelen = ctypes.sizeof(_SockaddrIn)
            hdr.iov = ctypes.pointer(self._iov[i])
            hdr.iovlen = 1
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint,
                                        ctypes.c_int]

    def send(self) -> int:
        """Send every datagram (the kernel may take fewer: returns how many went)."""
        sent = self._libc.sendmmsg(self.fd, ctypes.addressof(self._vec), self.count, 0)
        return max(0, sent)


def _batches(plan: list[tuple[bool, bytes, tuple[str, int]]], raw: socket.socket,
             srv: socket.socket, block: int = 64) -> list[Batch]:
    """The plan cut into runs for one socket: for each block of sources, their packets of
    step 1 (requests), then step 2 (answers), ... so every source keeps its order."""
    steps = 4  # packets per source in the mix
    out: list[Batch] = []
    for first in range(0, len(plan), block * steps):
        chunk = plan[first : first + block * steps]
        for step in range(steps):
            items = chunk[step::steps]
            sock = raw if items[0][0] else srv
            out.append(Batch(sock, [(data, addr) for _, data, addr in items]))
    return out


def send_mix(args: argparse.Namespace) -> dict[str, object]:
    """Offer the registration mix as fast as one core can, for ``seconds``.

    With ``--warmup`` one round is first sent paced to the consumer, so that a guard has seen
    every source register once (known-good marks written) before the flat-out phase; "warm"
    is printed when that round has been consumed.
    """
    key = ProofKey(bytes.fromhex(args.proof_key)) if args.proof_key else None
    mix = registration_mix(args.sources, fail_every=args.fail_every, key=key)
    raw = _raw_socket()
    enter_netns(args.server_ns)
    srv = _server_socket()
    plan: list[tuple[bool, bytes, tuple[str, int]]] = []
    for n, w in enumerate(mix):
        if w.inbound:
            plan.append((True, ipv4_udp(w.src, w.dst, w.sport, w.dport, w.payload, n),
                         (w.dst, 0)))
        else:
            plan.append((False, w.payload, (w.dst, w.dport)))
    print("ready", flush=True)
    if args.warmup:
        _paced(plan, raw, srv, args.queue, 500)
        while queue_counters(args.queue)["waiting"]:
            time.sleep(0.001)
    batches = _batches(plan, raw, srv)
    print("warm", flush=True)
    sent = 0
    deadline = time.monotonic() + args.seconds
    while time.monotonic() < deadline:
        for batch in batches:
            sent += batch.send()
    return {"sent": sent, "plan": len(plan)}


def send_spoof(args: argparse.Namespace) -> dict[str, object]:
    """One REGISTER from each of ``count`` distinct spoofed sources, paced by the queue.

    The sender keeps at most ``window`` packets waiting in the queue (read from the queue's
    counters), so every packet reaches the consumer: no overflow drops on a queue without
    bypass.
    """
    base_int = int(ipaddress.IPv4Address(args.base))
    raw = _raw_socket()
    enter_netns(args.server_ns)
    srv = _server_socket()  # the sink for accepted requests
    send = raw.sendto
    dest = (SERVER, 0)
    start = queue_counters(args.queue)["id_sequence"]
    print("ready", flush=True)
    sent = errors = 0
    t0 = time.monotonic()
    batch = 256
    while sent < args.count:
        c = queue_counters(args.queue)
        if c["waiting"] > args.window:
            time.sleep(0.0005)
            continue
        for index in range(sent, min(sent + batch, args.count)):
            try:
                send(spoofed_register(index, base_int)[1], dest)
            except OSError:
                errors += 1
        sent = min(sent + batch, args.count)
    while queue_counters(args.queue)["waiting"] and time.monotonic() - t0 < 600:
        time.sleep(0.01)
    end = queue_counters(args.queue)
    srv.close()
    return {"sent": sent, "send_errors": errors, "seconds": round(time.monotonic() - t0, 2),
            "queued": end["id_sequence"] - start, "queue_dropped": end["queue_dropped"],
            "user_dropped": end["user_dropped"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    mix = sub.add_parser("mix", help="throughput mix, as fast as possible")
    mix.add_argument("--server-ns", required=True)
    mix.add_argument("--seconds", type=float, default=10.0)
    mix.add_argument("--sources", type=int, default=2000)
    mix.add_argument("--fail-every", type=int, default=10)
    mix.add_argument("--queue", type=int, default=0)
    mix.add_argument("--warmup", action="store_true")
    mix.add_argument("--proof-key", default="", help="the guard's proof key (hex)")
    spoof = sub.add_parser("spoof", help="one REGISTER per distinct spoofed source")
    spoof.add_argument("--server-ns", required=True)
    spoof.add_argument("--count", type=int, default=1_000_000)
    spoof.add_argument("--base", default=SPOOF_BASE)
    spoof.add_argument("--queue", type=int, default=0)
    spoof.add_argument("--window", type=int, default=2000)
    args = parser.parse_args(argv)
    result = send_mix(args) if args.cmd == "mix" else send_spoof(args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
