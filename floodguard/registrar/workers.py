"""Several registrar processes on the same listen addresses (``[registrar] workers``).

The supervisor binds every socket, then forks `workers` processes. All of them read the same UDP
sockets (as Kamailio's children do: whichever worker is free takes the next datagram, so even a
single busy peer is spread over all of them); TCP and TLS are served by worker 0 alone, so the
connection limits per source stay exact.

State is partitioned by digest username: the worker ``crc32(username) % workers`` owns that
user's bindings and the nonce-counts of every request carrying that user's credentials (and
the registrar only ever binds credentials to the AOR of their own user). A request with
credentials that reaches another worker is passed to its owner over a Unix datagram socket
before anything about it is decided, and the owner answers it from the same UDP socket (or
through worker 0, which holds TCP and TLS connections). So replay protection, the response
cache, max_contacts and the 200's contact list behave exactly as with one process, and a
challenge issued by any worker verifies at every other (one nonce secret, one issue time).

Requests without credentials (first REGISTERs, answered 401, OPTIONS and the rest) are
stateless and answered by whoever read them. SIP responses (answers to liveness probes) are
handled where they arrive and copied to every other worker, so the prober sees them. An INVITE
is decided by the caller's owner, which reads the callee's bindings from the state database
when another worker owns them (written behind, at most ~100 ms old).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

from floodguard.config import split_listen
from floodguard.lifetime import stop_with
from floodguard.registrar.accounts import Account
from floodguard.registrar.bindings import _COLUMNS, Binding, BindingTable, connect
from floodguard.registrar.core import Settings, Source
from floodguard.registrar.liveness import BRANCH_PREFIX
from floodguard.registrar.server import (
    RegistrarServer,
    _bound_socket,
    load_accounts,
    serve,
    tls_addresses,
    tls_context,
)
from floodguard.registrar.wake_one import WakeOneEpoll
from floodguard.sip.message import SipMessage

log = logging.getLogger("floodguard.registrar")

_CHANNEL_BUFFER = 4 * 1024 * 1024
_CHANNEL_BATCH = 64
_CHANNEL_DATAGRAM = 65536  # queued envelopes for one worker are sent once they reach this
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)
# With a shared socket a smaller drain per wakeup leaves the rest to an idle worker.
_SHARED_UDP_BATCH = 16
_MAX_STREAM_NAMES = 65536
# REQUEST: for the owner of its credentials (handled there as is); GUESS: probably for that
# worker (a quick look at the bytes), which parses it and passes it on again if not; RESPONSE:
# a copy of a SIP response; WRITE: bytes for worker 0 to write to a TCP/TLS connection.
REQUEST, GUESS, RESPONSE, WRITE = b"R", b"G", b"S", b"W"
# The username in an Authorization line, read without parsing the message (a mere guess: the
# parsed credentials decide, see WorkerServer._route).
_USERNAME = re.compile(rb'\nAuthorization[ \t]*:[^\r\n]*?[ \t,]username[ \t]*=[ \t]*"([^"\r\n]*)"',
                       re.IGNORECASE)

SocketKey = tuple[str, int, int]  # host, port, socket kind


def count(settings: Settings) -> int:
    """How many worker processes `settings` asks for (0: one per CPU)."""
    wanted = int(getattr(settings, "workers", 1) or 0)
    if wanted <= 0:
        try:
            wanted = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            wanted = os.cpu_count() or 2
    return max(1, wanted)


def owner_of(username: str, workers: int) -> int:
    """The worker that owns a digest username (and the bindings of its AOR)."""
    return zlib.crc32(username.encode("utf-8", "surrogatepass")) % workers


def envelope(kind: bytes, src: Source, payload: bytes, sockname: tuple[str, int] = ("", 0)
             ) -> bytes:
    """One message between workers: kind, where it came from, the SIP bytes."""
    head = "\t".join((src.transport, src.ip, str(src.port), src.local, sockname[0],
                      str(sockname[1]))).encode()
    return kind + len(head).to_bytes(2, "big") + head + payload


def open_envelope(data: bytes) -> tuple[bytes, Source, tuple[str, int], bytes]:
    size = int.from_bytes(data[1:3], "big")
    transport, ip, port, local, sock_host, sock_port = data[3 : 3 + size].decode().split("\t")
    return (data[:1], Source(transport, ip, int(port), local), (sock_host, int(sock_port)),
            data[3 + size :])


class SharedLookup:
    """Bindings for INVITE: this worker's own from memory, the others' from the database."""

    def __init__(self, table: BindingTable, mine: Callable[[str], bool]) -> None:
        self.table = table
        self.mine = mine

    def active(self, aor: str, now: float) -> list[Binding]:
        if self.mine(aor):
            return self.table.active(aor, now)
        rows = self.table.db.execute(
            f"SELECT {_COLUMNS} FROM reg_bindings WHERE aor = ? AND expires_at > ?", (aor, now)
        ).fetchall()
        return [Binding.from_row(row) for row in rows]


class WorkerServer(RegistrarServer):
    """One worker: the shared UDP sockets, TCP/TLS in worker 0, its partition of the state."""

    def __init__(
        self,
        settings: Settings,
        accounts: Mapping[str, Account],
        *,
        index: int,
        workers: int,
        inbox: socket.socket,
        outboxes: list[socket.socket],
        sockets: dict[SocketKey, socket.socket],
        started: float,
        accounts_loader: Callable[[], Mapping[str, Account]] | None = None,
    ) -> None:
        self.index, self.workers = index, workers
        self.inbox, self.outboxes, self.sockets = inbox, outboxes, sockets
        self.stream_names: dict[tuple[str, str, int], tuple[str, int]] = {}
        self.lost = 0  # datagrams a full channel refused
        self._outgoing: list[list[bytes]] = [[] for _ in range(workers)]
        self._outgoing_size = [0] * workers
        self._flush_due = False
        self._in_batch = False  # reading a batch of UDP datagrams: batch_done sends
        super().__init__(settings, accounts, accounts_loader=accounts_loader, started=started)
        self.core.router = self._route
        self.core.lookup = SharedLookup(self.table, self.mine)

    def mine(self, username: str) -> bool:
        return owner_of(username, self.workers) == self.index

    def _open_table(self) -> BindingTable:
        return BindingTable(self.settings.state_path, keep=self.mine)

    def _socket(self, host: str, port: int, kind: socket.SocketKind) -> socket.socket | None:
        return self.sockets.pop((host, port, int(kind)), None)

    async def start(self) -> None:
        await super().start()
        for endpoint in self.udp.values():
            endpoint.batch = _SHARED_UDP_BATCH
        asyncio.get_running_loop().add_reader(self.inbox.fileno(), self._inbox_ready)

    async def stop(self) -> None:
        if not self._stopped:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.inbox.fileno())
        await super().stop()

    # --- between workers -----------------------------------------------------------------

    def _post(self, worker: int, data: bytes) -> None:
        """Queue an envelope for `worker`; everything queued while the event loop handles one
        batch of input leaves in one datagram per worker (one send, one wakeup): at the end of
        a UDP batch (`batch_done`), else on the loop's next turn."""
        pending = self._outgoing[worker]
        pending.append(len(data).to_bytes(4, "big"))
        pending.append(data)
        self._outgoing_size[worker] += len(data) + 4
        if self._outgoing_size[worker] >= _CHANNEL_DATAGRAM:
            self._send(worker)
        elif not self._flush_due:
            self._flush_due = True
            if not self._in_batch:
                asyncio.get_running_loop().call_soon(self._flush)

    def batch_done(self) -> None:
        self._in_batch = False
        if self._flush_due:
            self._flush()

    def _flush(self) -> None:
        self._flush_due = False
        for worker in range(self.workers):
            if self._outgoing[worker]:
                self._send(worker)

    def _send(self, worker: int) -> None:
        data = b"".join(self._outgoing[worker])
        self._outgoing[worker].clear()
        self._outgoing_size[worker] = 0
        try:
            self.outboxes[worker].send(data)
        except OSError as exc:
            self.lost += 1  # channel full: like lost datagrams, the peers retransmit
            if self.lost in (1, 10, 100) or self.lost % 1000 == 0:
                log.warning("worker %d: messages for worker %d lost (%d times so far): %s",
                            self.index, worker, self.lost, exc,
                            extra={"event": "worker_messages_lost",
                                   "fields": {"worker": self.index, "to": worker,
                                              "lost": self.lost, "error": str(exc)}})

    def begin_batch(self) -> Callable[[bytes, Source], bytes | None]:
        self._in_batch = True
        return self._udp_datagram

    def _udp_datagram(self, data: bytes, src: Source) -> bytes | None:
        """A datagram whose credentials name a user another worker owns goes there before
        being parsed (parsing it twice is most of what passing it on would cost)."""
        found = _USERNAME.search(data)
        if found is not None:
            owner = zlib.crc32(found.group(1)) % self.workers
            if owner != self.index:
                self._post(owner, envelope(GUESS, src, data))
                return None
        return self.core.handle_datagram(data, src)

    def _route(self, msg: SipMessage, src: Source, raw: bytes) -> bool:
        """Pass a request with credentials to the worker owning its user (True: passed on)."""
        if not msg.is_request:
            # a liveness answer: the worker that sent the probe may be another one
            branch = msg.via_branch
            if not branch or not branch.startswith(BRANCH_PREFIX):
                return False  # not an answer to a probe: nobody wants a copy
            data = envelope(RESPONSE, src, raw)
            for worker in range(self.workers):
                if worker != self.index:
                    self._post(worker, data)
            return False
        creds = msg.authorization
        if creds is None or not creds.username:
            return False
        owner = owner_of(creds.username, self.workers)
        if owner == self.index:
            return False
        sockname = ("", 0)
        if src.transport != "udp":
            conn = self.conns.get((src.transport, src.ip, src.port))
            name = conn.transport.get_extra_info("sockname") if conn and conn.transport else None
            if name:
                sockname = (str(name[0]), int(name[1]))
        self._post(owner, envelope(REQUEST, src, raw, sockname))
        return True

    def _inbox_ready(self) -> None:
        try:
            for _ in range(_CHANNEL_BATCH):
                try:
                    data = self.inbox.recv(262144)
                except (BlockingIOError, InterruptedError):
                    return
                at = 0
                while at + 4 <= len(data):
                    size = int.from_bytes(data[at : at + 4], "big")
                    item = data[at + 4 : at + 4 + size]
                    at += 4 + size
                    try:
                        self._deliver(*open_envelope(item))
                    except Exception:
                        self.errors("unexpected error handling a message from another worker")
        finally:
            for endpoint in self.udp.values():  # the answers to all of them, together
                endpoint.flush()

    def _deliver(self, kind: bytes, src: Source, sockname: tuple[str, int], payload: bytes
                 ) -> None:
        if kind == WRITE:
            conn = self.conns.get((src.transport, src.ip, src.port))
            if conn is not None:
                conn.write(payload)
            return
        if kind == REQUEST and src.transport != "udp" and sockname[0]:
            if len(self.stream_names) >= _MAX_STREAM_NAMES:
                self.stream_names.clear()
            self.stream_names[(src.transport, src.ip, src.port)] = sockname
        reply = self.core.handle_datagram(payload, src, route=kind == GUESS)
        if reply is None or kind == RESPONSE:
            return
        if src.transport == "udp":
            endpoint = self.udp.get(src.local)
            if endpoint is not None:
                endpoint.queue(reply, src.ip, src.port)
        else:
            self._post(0, envelope(WRITE, src, reply))

    # --- liveness over connections held by worker 0 ---------------------------------------

    def local_address(self, binding: Binding) -> tuple[str, int] | None:
        if binding.transport == "udp" or self.index == 0:
            return super().local_address(binding)
        return self.stream_names.get((binding.transport, binding.source_ip, binding.source_port))

    def send(self, binding: Binding, data: bytes) -> bool:
        if binding.transport == "udp" or self.index == 0:
            return super().send(binding, data)
        src = Source(binding.transport, binding.source_ip, binding.source_port, binding.local)
        self._post(0, envelope(WRITE, src, data))
        return True

    def _save_liveness(self, wall: float) -> None:
        """Each worker saves its counters; worker 0 writes their sum for `floodguard status`."""
        live = self.liveness
        mine = {"sent": live.sent, "answers": live.answers, "timeouts": live.timeouts,
                "saved": wall}
        self.table.set_meta(f"liveness.{self.index}", json.dumps(mine))
        if self.index != 0:
            return
        total = dict(mine)
        for worker in range(1, self.workers):
            raw = self.table.meta(f"liveness.{worker}")
            other: dict[str, Any] = json.loads(raw) if raw else {}
            for name in ("sent", "answers", "timeouts"):
                total[name] += int(other.get(name, 0))
        self.table.set_meta("liveness", json.dumps(total))


# --- the supervisor ----------------------------------------------------------------------


def _ensure_secret(path: str) -> None:
    """Create the nonce secret once, before the workers read it (they must share it)."""
    db = connect(path)
    try:
        db.execute("INSERT OR IGNORE INTO reg_meta(key, value) VALUES ('nonce_secret', ?)",
                   (os.urandom(32).hex(),))
    finally:
        db.close()


def _bind_all(settings: Settings) -> dict[SocketKey, socket.socket]:
    """Every listening socket, bound here so errors surface before any worker starts."""
    socks: dict[SocketKey, socket.socket] = {}
    try:
        wanted = [(spec, socket.SOCK_DGRAM) for spec in settings.listen]
        wanted += [(spec, socket.SOCK_STREAM) for spec in settings.listen]
        if tls_context(settings) is not None:  # a bad certificate fails here too
            wanted += [(spec, socket.SOCK_STREAM) for spec in tls_addresses(settings)]
        for spec, kind in wanted:
            host, port = split_listen(spec)
            if (host, port, int(kind)) not in socks:
                socks[(host, port, int(kind))] = _bound_socket(host, port, kind)
    except BaseException:
        for sock in socks.values():
            sock.close()
        raise
    return socks


def _channel() -> tuple[socket.socket, socket.socket]:
    inbox, outbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for sock, forced, option in ((inbox, _SO_RCVBUFFORCE, socket.SO_RCVBUF),
                                 (outbox, _SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced, _CHANNEL_BUFFER)  # root: above rmem_max
        except OSError:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, _CHANNEL_BUFFER)
        sock.setblocking(False)
    return inbox, outbox


def _worker(settings: Settings, index: int, workers: int,
            channels: list[tuple[socket.socket, socket.socket]],
            sockets: dict[SocketKey, socket.socket], started: float,
            ready: Callable[[RegistrarServer], None] | None) -> None:
    for other, (inbox, _) in enumerate(channels):
        if other != index:
            inbox.close()
    if index != 0:  # TCP and TLS belong to worker 0
        for key in [key for key in sockets if key[2] != int(socket.SOCK_DGRAM)]:
            sockets.pop(key).close()

    def make(accounts: Mapping[str, Account]) -> RegistrarServer:
        return WorkerServer(settings, accounts, index=index, workers=workers,
                            inbox=channels[index][0], outboxes=[out for _, out in channels],
                            sockets=sockets, started=started,
                            accounts_loader=lambda: load_accounts(settings.accounts))

    shared = {sock.fileno() for key, sock in sockets.items() if key[2] == int(socket.SOCK_DGRAM)}
    with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(WakeOneEpoll(shared))
                        ) as runner:
        runner.run(serve(settings, ready=ready if index == 0 else None, make=make))


def run(settings: Settings, *, ready: Callable[[RegistrarServer], None] | None = None) -> None:
    """Fork `count(settings)` workers and wait for them; SIGTERM/SIGINT stop them all, SIGHUP
    reloads every worker's accounts. If a worker dies, the others are stopped (exit status 1);
    if the supervisor dies, the kernel stops the workers (`floodguard.lifetime`)."""
    workers = count(settings)
    load_accounts(settings.accounts)  # a bad accounts file is reported once, here
    _ensure_secret(settings.state_path)
    sockets = _bind_all(settings)
    channels = [_channel() for _ in range(workers)]
    started = time.time()
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    handled = stop_signals | {signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, handled)
    pids: list[int] = []
    supervisor = os.getpid()
    try:
        for index in range(workers):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    stop_with(supervisor)
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
                    _worker(settings, index, workers, channels, sockets, started, ready)
                    code = 0
                except BaseException as exc:  # noqa: BLE001 - report, never return to caller
                    log.critical("worker %d: %r", index, exc,
                                 extra={"event": "worker_failed",
                                        "fields": {"worker": index, "error": repr(exc)}})
                finally:
                    os._exit(code)
            pids.append(pid)
    finally:
        for sock in sockets.values():
            sock.close()
        for pair in channels:
            for sock in pair:
                sock.close()
    _supervise(pids, stop_signals, handled)


def _supervise(pids: list[int], stop_signals: set[signal.Signals],
               handled: set[signal.Signals]) -> None:
    live = set(pids)
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in stop_signals:
            stopping = True
        for pid in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM if signum in stop_signals else signum)

    previous = {signum: signal.signal(signum, forward) for signum in handled}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)
    failed = False
    try:
        while live:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            live.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            if stopping and code != 0:
                failed = True  # e.g. killed before its final flush: bindings may be lost
                log.error("registrar worker %d did not stop cleanly (status %d)", pid, code,
                          extra={"event": "worker_died", "fields": {"pid": pid, "status": code}})
            elif not stopping:
                failed = True
                log.error("registrar worker %d exited (status %d): stopping the others", pid,
                          code, extra={"event": "worker_died",
                                       "fields": {"pid": pid, "status": code}})
                forward(signal.SIGTERM, None)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if failed:
        raise SystemExit(1)
