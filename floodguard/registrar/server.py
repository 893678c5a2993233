"""asyncio transports for the registrar: UDP, TCP and TLS on every listen address (IPv4 and IPv6).

UDP hands each datagram to the core; TCP and TLS connections are `streams.StreamProtocol`
(framing, caps, output flow control), admitted within `max_connections` and
`max_connections_per_source`. A housekeeping task runs every 100 ms: liveness probes, the
write-behind flush of bindings, and every second or so expiry, nonce-count pruning and
connection timeouts (idle, partial message, unread output). SIGTERM/SIGINT stop cleanly with a
final flush; SIGHUP reloads the accounts file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sqlite3
import ssl
import time
from collections import Counter
from collections.abc import Callable, Mapping

from floodguard.config import ConfigError, split_listen
from floodguard.registrar import accounts as accountsmod
from floodguard.registrar.accounts import Account
from floodguard.registrar.bindings import Binding, BindingTable
from floodguard.registrar.core import Registrar, Settings, Source
from floodguard.registrar.liveness import Liveness
from floodguard.registrar.streams import StreamProtocol
from floodguard.registrar.udp import UdpEndpoint
from floodguard.store import put_report

log = logging.getLogger("floodguard.registrar")

TLS_PORT = 5061
HOUSEKEEPING_INTERVAL = 0.1
# About 1,500 queued datagrams: under overload, requests queue for well under T1 (500 ms) and
# the excess is dropped rather than answered after the client already retransmitted.
_UDP_BUFFER = 2 * 1024 * 1024
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _bound_socket(host: str, port: int, kind: socket.SocketKind) -> socket.socket:
    sock = socket.socket(_family(host), kind)
    try:
        if kind == socket.SOCK_STREAM:
            # Not for UDP: there SO_REUSEADDR would let a second process bind the same port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sock.family == socket.AF_INET6:
            # Separate v4 and v6 sockets so 0.0.0.0:P and [::]:P can both be listed.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_DGRAM:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _UDP_BUFFER)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_BUFFER)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        what = "udp" if kind == socket.SOCK_DGRAM else "tcp"
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise OSError(exc.errno, f"cannot listen on {what}:{where}: {exc.strerror}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def tls_addresses(settings: Settings) -> tuple[str, ...]:
    """TLS listen addresses: `tls_listen`, else port 5061 on every `listen` host."""
    if not (settings.tls_cert and settings.tls_key):
        return ()
    if settings.tls_listen:
        return tuple(settings.tls_listen)
    out: list[str] = []
    for spec in settings.listen:
        host, _ = split_listen(spec)
        addr = f"[{host}]:{TLS_PORT}" if ":" in host else f"{host}:{TLS_PORT}"
        if addr not in out:
            out.append(addr)
    return tuple(out)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server TLS context (None without a certificate); raises for a bad one."""
    if not (settings.tls_cert and settings.tls_key):
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


class _ErrorLog:
    """Log unexpected exceptions without letting a flood of them fill the disk."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, what: str) -> None:
        self.count += 1
        if self.count <= 20 or self.count % 1000 == 0:
            log.exception("%s (error %d; the packet was dropped)", what, self.count,
                          extra={"event": "registrar_error",
                                 "fields": {"what": what, "count": self.count}})


class RegistrarServer:
    """Owns the sockets, the binding table, liveness and the housekeeping task."""

    def __init__(
        self,
        settings: Settings,
        accounts: Mapping[str, Account],
        *,
        accounts_loader: Callable[[], Mapping[str, Account]] | None = None,
        started: float | None = None,
    ) -> None:
        self.settings = settings
        self.table = self._open_table()
        secret_hex = self.table.meta("nonce_secret")
        if secret_hex is None:
            secret_hex = os.urandom(32).hex()
            self.table.set_meta("nonce_secret", secret_hex)
        self.liveness = Liveness(self.table, self, settings.time_to_live,
                                 give_up=settings.liveness_timeout)
        self.core = Registrar(settings, accounts, self.table, secret=bytes.fromhex(secret_hex),
                              started=started, liveness=self.liveness, report=self._report)
        self.accounts_loader = accounts_loader
        self.errors = _ErrorLog()
        self.db_errors = 0
        self.udp: dict[str, UdpEndpoint] = {}
        self.udp_addr: dict[str, tuple[str, int]] = {}
        self.stream_addr: dict[str, tuple[str, int]] = {}
        self.conns: dict[tuple[str, str, int], StreamProtocol] = {}
        self.per_source: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()  # connections refused or aborted, by reason
        self.servers: list[asyncio.Server] = []
        self.addresses: list[str] = []
        self._routes: dict[str, str | None] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        now = time.monotonic()
        for binding in self.table:
            self.liveness.track(binding.key, now)

    # --- lifecycle -------------------------------------------------------------------------

    def begin_batch(self) -> Callable[[bytes, Source], bytes | None]:
        """A batch of UDP datagrams begins: what answers each one (a worker first passes on
        what another owns)."""
        return self.core.handle_datagram

    def batch_done(self) -> None:
        """The batch is answered (a worker sends what it passed on, together)."""

    def _open_table(self) -> BindingTable:
        return BindingTable(self.settings.state_path)

    def _socket(self, host: str, port: int, kind: socket.SocketKind) -> socket.socket | None:
        """The socket to serve on (None: this process does not serve that transport)."""
        return _bound_socket(host, port, kind)

    async def start(self) -> None:
        """Bind every listen address (UDP and TCP, plus TLS when configured)."""
        loop = asyncio.get_running_loop()
        try:
            for spec in self.settings.listen:
                host, port = split_listen(spec)
                udp_sock = self._socket(host, port, socket.SOCK_DGRAM)
                if udp_sock is not None:
                    udp_id = f"udp:{spec}"
                    endpoint = UdpEndpoint(self, udp_sock, udp_id)
                    endpoint.start(loop)
                    self.udp[udp_id] = endpoint
                    self.udp_addr[udp_id] = udp_sock.getsockname()[:2]
                    self.addresses.append(udp_id)
                await self._stream_server(host, port, "tcp", None)
            context = self._tls_context()
            if context is not None:
                for spec in tls_addresses(self.settings):
                    host, port = split_listen(spec)
                    await self._stream_server(host, port, "tls", context)
        except BaseException:
            await self.stop()
            raise
        self._task = asyncio.create_task(self._housekeeping())

    def _report(self, ip: str, aor: str, ok: bool, expires: int | None) -> None:
        """A TLS outcome for the guard, through the shared state database."""
        try:
            put_report(self.table.db, ip, aor, ok, expires)
        except sqlite3.Error:
            self.db_errors += 1

    def _tls_context(self) -> ssl.SSLContext | None:
        return tls_context(self.settings)

    async def _stream_server(
        self, host: str, port: int, name: str, context: ssl.SSLContext | None
    ) -> None:
        sock = self._socket(host, port, socket.SOCK_STREAM)
        if sock is None:
            return
        local = f"{name}:" + (f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        server = await asyncio.get_running_loop().create_server(
            lambda: StreamProtocol(self, name, local), sock=sock, ssl=context,
            ssl_handshake_timeout=10.0 if context is not None else None, backlog=1024,
        )
        self.servers.append(server)
        self.stream_addr[local] = sock.getsockname()[:2]
        self.addresses.append(local)

    async def stop(self) -> None:
        """Close every socket and write every pending binding (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for server in self.servers:
            server.close()
        for conn in list(self.conns.values()):
            if conn.transport is not None:
                conn.transport.abort()
        loop = asyncio.get_running_loop()
        for endpoint in self.udp.values():
            endpoint.close(loop)
        self.servers.clear()
        self.udp.clear()
        self.table.close()

    def reload_accounts(self) -> None:
        if self.accounts_loader is None:
            return
        try:
            accounts = self.accounts_loader()
        except ConfigError as exc:
            log.error("accounts not reloaded: %s", "; ".join(exc.errors),
                      extra={"event": "accounts_reload_failed",
                             "fields": {"errors": list(exc.errors)}})
            return
        self.core.set_accounts(accounts)
        log.info("accounts reloaded: %d", len(accounts),
                 extra={"event": "accounts_reloaded", "fields": {"accounts": len(accounts)}})

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        next_slow = 0.0
        next_tick = loop.time()
        while True:
            # A fixed grid rather than sleep(interval): a drifting tick would put 9 ticks in
            # some seconds and 10 in others, and the liveness probes would bunch accordingly.
            next_tick += HOUSEKEEPING_INTERVAL
            delay = next_tick - loop.time()
            if delay < 0:  # fell behind (busy or suspended): no burst of catch-up ticks
                next_tick = loop.time()
                delay = 0
            await asyncio.sleep(delay)
            try:
                mono, wall = time.monotonic(), time.time()
                self.liveness.tick(mono, wall)
                if mono >= next_slow:
                    next_slow = mono + 1.0
                    self.table.expire(wall)
                    self.core.auth.prune(wall)
                    self._close_idle(mono)
                    self._save_liveness(wall)
                self.table.flush()
            except sqlite3.Error as exc:
                self.db_errors += 1
                if self.db_errors in (1, 10, 100) or self.db_errors % 1000 == 0:
                    log.error("cannot write bindings (will retry; failure %d): %s",
                              self.db_errors, exc,
                              extra={"event": "bindings_write_failed",
                                     "fields": {"failures": self.db_errors,
                                                "error": str(exc)}})
            except Exception:
                self.errors("unexpected error in housekeeping")

    def _save_liveness(self, wall: float) -> None:
        """The liveness counters for `floodguard status` (reg_meta "liveness")."""
        live = self.liveness
        self.table.set_meta("liveness", json.dumps(
            {"sent": live.sent, "answers": live.answers, "timeouts": live.timeouts,
             "saved": wall}))

    def _close_idle(self, now: float) -> None:
        idle = self.settings.tcp_idle_timeout
        write_timeout = self.settings.tcp_write_timeout
        for conn in list(self.conns.values()):
            conn.expire(now, idle, write_timeout)

    # --- connection slots ----------------------------------------------------------------------

    def admit(self, conn: StreamProtocol) -> bool:
        """Take a slot for a new connection, or say why not (the caller aborts it)."""
        s = self.settings
        if len(self.conns) >= s.max_connections:
            self.note_drop(conn, "max_connections")
            return False
        if self.per_source[conn.source] >= s.max_connections_per_source:
            self.note_drop(conn, "max_connections_per_source")
            return False
        self.conns[(conn.name, *conn.peer)] = conn
        self.per_source[conn.source] += 1
        return True

    def note_drop(self, conn: StreamProtocol, why: str) -> None:
        """Count a refused or aborted connection; log the first few and then every 1000th."""
        self.dropped[why] += 1
        total = sum(self.dropped.values())
        if total <= 20 or total % 1000 == 0:
            log.warning("%s connection from %s port %d dropped: %s (%d dropped so far)",
                        conn.name, conn.peer[0], conn.peer[1], why, total,
                        extra={"event": "connection_dropped",
                               "fields": {"transport": conn.name, "ip": conn.peer[0],
                                          "port": conn.peer[1], "why": why,
                                          "dropped": total}})

    def release(self, conn: StreamProtocol) -> None:
        key = (conn.name, *conn.peer)
        if self.conns.get(key) is conn:
            del self.conns[key]
        left = self.per_source[conn.source] - 1
        if left > 0:
            self.per_source[conn.source] = left
        else:
            del self.per_source[conn.source]

    # --- liveness Sender ---------------------------------------------------------------------

    def _udp_for(self, binding: Binding) -> str | None:
        """The UDP socket a binding arrived on, else (listen addresses changed since it was
        stored) any socket of its address family."""
        if binding.local in self.udp:
            return binding.local
        want_v6 = ":" in binding.source_ip
        for local, (host, _) in self.udp_addr.items():
            if (":" in host) == want_v6:
                return local
        return None

    def local_address(self, binding: Binding) -> tuple[str, int] | None:
        if binding.transport == "udp":
            local = self._udp_for(binding)
            if local is None:
                return None
            host, port = self.udp_addr[local]
            if host in ("0.0.0.0", "::"):
                routed = self._route_from(binding.source_ip)
                if routed is None:
                    return None
                host = routed
            return host, port
        conn = self.conns.get((binding.transport, binding.source_ip, binding.source_port))
        if conn is None or conn.transport is None:
            return None
        name = conn.transport.get_extra_info("sockname")
        return (str(name[0]), int(name[1])) if name else None

    def _route_from(self, ip: str) -> str | None:
        """Our source address towards `ip` (a connected UDP socket asks the routing table)."""
        if ip in self._routes:
            return self._routes[ip]
        found: str | None = None
        try:
            with socket.socket(_family(ip), socket.SOCK_DGRAM) as probe:
                probe.connect((ip, 9))
                found = str(probe.getsockname()[0])
        except OSError:
            found = None
        if len(self._routes) > 65536:
            self._routes.clear()
        self._routes[ip] = found
        return found

    def send(self, binding: Binding, data: bytes) -> bool:
        if binding.transport == "udp":
            local = self._udp_for(binding)
            transport = self.udp.get(local) if local is not None else None
            if transport is None or transport.is_closing():
                return False
            transport.sendto(data, (binding.source_ip, binding.source_port))
            return True
        conn = self.conns.get((binding.transport, binding.source_ip, binding.source_port))
        return conn is not None and conn.write(data)


def load_accounts(path: str) -> dict[str, Account]:
    """The accounts file at `path` (raises ConfigError)."""
    return accountsmod.load(path)


async def serve(
    settings: Settings,
    *,
    ready: Callable[[RegistrarServer], None] | None = None,
    make: Callable[[Mapping[str, Account]], RegistrarServer] | None = None,
) -> None:
    """Run the registrar until SIGTERM or SIGINT (`make` builds the server from the accounts)."""
    accounts = load_accounts(settings.accounts)
    if make is None:
        server = RegistrarServer(settings, accounts,
                                 accounts_loader=lambda: load_accounts(settings.accounts))
    else:
        server = make(accounts)
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload_accounts)
    if ready is not None:
        ready(server)
    try:
        await stop.wait()
    finally:
        # A stop often comes twice (systemd signals every process of the unit and the
        # supervisor passes its own on to the workers): a late SIGTERM must not kill the final
        # flush of the bindings, so it is ignored from here on. A second Ctrl-C still
        # interrupts a shutdown on purpose.
        loop.remove_signal_handler(signal.SIGINT)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, _ignored)
        try:
            await server.stop()
        finally:
            for signum in (signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)
                signal.signal(signum, signal.SIG_IGN)


def _ignored() -> None:
    """A stop signal during the shutdown: the shutdown is already under way."""


def run(settings: Settings, *, ready: Callable[[RegistrarServer], None] | None = None) -> None:
    """Blocking entry point (the stock asyncio loop: uvloop measured no clear gain here); with
    `workers` above 1, forks that many processes (floodguard.registrar.workers)."""
    from floodguard.registrar import workers

    if workers.count(settings) > 1:
        workers.run(settings, ready=ready)
        return
    asyncio.run(serve(settings, ready=ready))
