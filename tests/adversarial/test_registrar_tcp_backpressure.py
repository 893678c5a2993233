"""Attack: a TCP or TLS client pipelines REGISTERs with large Via sets and never reads the
answers. The registrar must stop reading from it, keep its memory flat, drop the connection once
the answers stay unread for `tcp_write_timeout`, and keep serving everyone else meanwhile."""

from __future__ import annotations

import socket
import ssl
import time

import pytest

from floodguard.registrar.uac import Uac
from tests.integration.registrar_helpers import (
    CLIENT_IP,
    CLIENT_IP2,
    SERVER_IP,
    exchange,
    host_port,
    registrar_env,
    rss_kb,
    self_signed,
    stream_exchange,
    tcp_socket,
    udp_socket,
)

pytestmark = pytest.mark.root("ip", "sipp")

WRITE_TIMEOUT = 3.0
PORTS = {"tcp": 5060, "tls": 5061}
RSS_GROWTH_LIMIT_KB = 24 * 1024
FLOOD_SECONDS = 12.0


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registrar-backpressure")
    cert, key = self_signed(tmp)
    with registrar_env(tmp, tcp_write_timeout=WRITE_TIMEOUT, tls_cert=str(cert),
                       tls_key=str(key)) as (pair, server):
        assert server.proc is not None
        with open(f"/proc/{server.proc.pid}/comm", encoding="ascii") as comm:
            assert comm.read().startswith("python")  # `ip netns exec` exec'd the registrar
        yield pair, server


def connect(pair, kind: str, ip: str, rcvbuf: int | None = None) -> socket.socket:
    sock = tcp_socket(pair.client_ns, ip, (SERVER_IP, PORTS[kind]), rcvbuf=rcvbuf)
    if kind == "tls":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock)
    return sock


def big_register(kind: str, local: str, vias: int = 60) -> bytes:
    """An unauthenticated REGISTER whose 401 copies ~9 KB of Via headers."""
    uac = Uac("1001", "x", f"{SERVER_IP}:{PORTS[kind]}", local, transport=kind.upper())
    extra = "".join(f"Via: SIP/2.0/{kind.upper()} 198.51.100.{i % 250}:5060;"
                    f"branch=z9hG4bK{i:0>100}\r\n" for i in range(vias))
    return uac.register().replace(b"Max-Forwards:", extra.encode() + b"Max-Forwards:", 1)


def phone_registers(pair, kind: str, user: str) -> int:
    """A phone on its own connection from another address: REGISTER, challenge, 200."""
    with connect(pair, kind, CLIENT_IP) as conn:
        uac = Uac(user, f"secret{user}", f"{SERVER_IP}:{PORTS[kind]}",
                  host_port(*conn.getsockname()[:2]), transport=kind.upper())
        buffer = bytearray()
        challenge = stream_exchange(conn, uac.register(), buffer)
        assert challenge.status == 401
        return stream_exchange(conn, uac.register(authorization=uac.authorize(challenge)),
                               buffer).status


@pytest.mark.parametrize("kind", ["tcp", "tls"])
def test_non_reading_client_is_dropped_and_memory_stays_flat(env, kind):
    pair, server = env
    pid = server.proc.pid
    hog = connect(pair, kind, CLIENT_IP2, rcvbuf=4096)
    data = big_register(kind, host_port(*hog.getsockname()[:2]))
    hog.setblocking(False)
    baseline = peak = rss_kb(pid)
    started = time.monotonic()
    sent = 0
    blocked_at: float | None = None
    dropped_at: float | None = None
    phone_status: int | None = None
    try:
        while time.monotonic() - started < FLOOD_SECONDS:
            try:
                # paced, so every read the registrar makes is small (no "oversized read")
                sent += hog.send(data)
                time.sleep(0.0005)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                if blocked_at is None:
                    blocked_at = time.monotonic()
                time.sleep(0.05)
            except (ConnectionError, ssl.SSLError, OSError):
                dropped_at = time.monotonic()
                break
            peak = max(peak, rss_kb(pid))
            if phone_status is None and blocked_at is not None:
                phone_status = phone_registers(pair, kind, "1002" if kind == "tcp" else "1003")
    finally:
        hog.close()
    peak = max(peak, rss_kb(pid))
    assert peak - baseline < RSS_GROWTH_LIMIT_KB, (
        f"registrar RSS grew {baseline} -> {peak} kB under a client that never reads "
        f"({sent} bytes sent)")
    assert dropped_at is not None, (
        f"the non-reading connection was never dropped ({sent} bytes sent in "
        f"{FLOOD_SECONDS} s, registrar RSS {baseline} -> {peak} kB)")
    assert blocked_at is not None and dropped_at - blocked_at <= WRITE_TIMEOUT + 4
    assert phone_status == 200, "a phone on another connection could not register"
    # Still serving, over every transport.
    assert server.proc.poll() is None
    probe = udp_socket(pair.client_ns, CLIENT_IP)
    try:
        uac = Uac("1004", "x", f"{SERVER_IP}:5060", host_port(CLIENT_IP, probe.getsockname()[1]))
        assert exchange(probe, uac.options(), (SERVER_IP, 5060)).status == 200
    finally:
        probe.close()
    assert phone_registers(pair, kind, "1005") == 200
