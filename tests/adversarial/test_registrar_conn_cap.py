"""Attack: one source opens connection after connection and leaves them idle to take every slot
of `max_connections`. Per-source slots (`max_connections_per_source`; an IPv6 source is its /64)
leave room for phones at other addresses, over TCP and TLS."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time

import pytest

from floodguard.registrar.uac import Uac
from tests.integration.registrar_helpers import (
    CLIENT_IP,
    CLIENT_IP2,
    SERVER_IP,
    SERVER_IP6,
    host_port,
    registrar_env,
    self_signed,
    stream_exchange,
    tcp_socket,
)

pytestmark = pytest.mark.root("ip", "sipp")

MAX_CONNECTIONS = 40
PER_SOURCE = 8
IPV6_HOGS = [f"fd77::1:{i:x}" for i in range(1, 21)]  # 20 addresses, all in fd77::/64


@pytest.fixture
def env(tmp_path):
    cert, key = self_signed(tmp_path)
    with registrar_env(tmp_path, listen=[f"{SERVER_IP}:5060", f"[{SERVER_IP6}]:5060"],
                       max_connections=MAX_CONNECTIONS, max_connections_per_source=PER_SOURCE,
                       tls_cert=str(cert), tls_key=str(key),
                       tls_listen=[f"{SERVER_IP}:5061"]) as (pair, server):
        yield pair, server


def alive(sock: socket.socket) -> bool:
    """Whether the registrar kept this connection (an aborted one reads as reset or EOF)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except (BlockingIOError, ssl.SSLWantReadError):
        return True
    except OSError:
        return False


def register(pair, user: str, port: int = 5060, tls: bool = False) -> int:
    conn = tcp_socket(pair.client_ns, CLIENT_IP, (SERVER_IP, port))
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        conn = context.wrap_socket(conn)
    with conn:
        uac = Uac(user, f"secret{user}", f"{SERVER_IP}:{port}",
                  host_port(*conn.getsockname()[:2]), transport="TLS" if tls else "TCP")
        buffer = bytearray()
        challenge = stream_exchange(conn, uac.register(), buffer)
        return stream_exchange(conn, uac.register(authorization=uac.authorize(challenge)),
                               buffer).status


def test_idle_connections_from_one_source_do_not_lock_out_phones(env):
    pair, _ = env
    for ip in IPV6_HOGS:
        pair.add_client_address(ip)
    hogs: list[socket.socket] = []
    try:
        # More idle connections from one IPv4 address than max_connections ...
        for _ in range(MAX_CONNECTIONS + 10):
            hogs.append(tcp_socket(pair.client_ns, CLIENT_IP2, (SERVER_IP, 5060)))
        # ... and one from each of 20 addresses of one IPv6 /64.
        v6 = [tcp_socket(pair.client_ns, ip, (SERVER_IP6, 5060)) for ip in IPV6_HOGS]
        hogs.extend(v6)
        time.sleep(0.5)
        assert sum(alive(h) for h in hogs[: MAX_CONNECTIONS + 10]) == PER_SOURCE
        assert sum(alive(h) for h in v6) == PER_SOURCE
        # The phone at another address gets a slot, over TCP and TLS.
        assert register(pair, "1001") == 200
        assert register(pair, "1002", port=5061, tls=True) == 200
        # TLS from the capped source is refused too (the slots are per source, not per port).
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        extra = context.wrap_socket(tcp_socket(pair.client_ns, CLIENT_IP2, (SERVER_IP, 5061)))
        hogs.append(extra)
        time.sleep(0.3)
        assert not alive(extra)
        # A freed slot is given back.
        for hog in hogs[:MAX_CONNECTIONS]:
            hog.close()
        time.sleep(0.5)
        again = tcp_socket(pair.client_ns, CLIENT_IP2, (SERVER_IP, 5060))
        hogs.append(again)
        time.sleep(0.3)
        assert alive(again)
    finally:
        for hog in hogs:
            with contextlib.suppress(OSError):
                hog.close()
