"""Transports on loopback (no root): UDP over IPv4/IPv6, TCP framing and limits, TLS."""

import asyncio
import socket
import ssl
import subprocess
import threading
import time

import pytest

from floodguard.registrar.accounts import Account
from floodguard.registrar.bindings import read_endpoints
from floodguard.registrar.core import Settings
from floodguard.registrar.server import RegistrarServer
from floodguard.registrar.uac import Uac
from floodguard.sip.message import parse_message
from tests.unit.registrar_kit import ACCOUNTS, ServerThread, free_port, read_message, spec


@pytest.fixture
def make_server(tmp_path):
    started: list[ServerThread] = []

    def make(hosts=("127.0.0.1",), **overrides) -> tuple[ServerThread, list[int]]:
        ports = [free_port(h) for h in hosts]
        values = {"listen": tuple(spec(h, p) for h, p in zip(hosts, ports, strict=True)),
                  "state_path": str(tmp_path / "state.db"), "accounts": ""}
        values.update(overrides)
        srv = ServerThread(Settings(**values))
        started.append(srv)
        return srv, ports

    yield make
    for srv in started:
        srv.stop()


def udp_exchange(sock: socket.socket, data: bytes, dest) -> bytes:
    sock.sendto(data, dest)
    reply, _ = sock.recvfrom(65535)
    return reply


def register_over(send, uac: Uac) -> bytes:
    challenge = send(uac.register())
    assert parse_message(challenge).status == 401
    return send(uac.register(authorization=uac.authorize(challenge)))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_udp_register_ipv4_and_ipv6(make_server, host):
    _, [port] = make_server((host,))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.bind((host, 0))
        local = spec(host, sock.getsockname()[1])
        uac = Uac("1001", "secret1001", spec(host, port), local)
        ok = parse_message(register_over(lambda d: udp_exchange(sock, d, (host, port)), uac))
        assert ok.status == 200 and ok.contacts[0].uri == uac.contact


def test_both_families_on_one_server(make_server):
    _, ports = make_server(("127.0.0.1", "::1"))
    for host, port in zip(("127.0.0.1", "::1"), ports, strict=True):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            uac = Uac("1002", "x", spec(host, port), spec(host, 5999))
            assert parse_message(udp_exchange(sock, uac.options(), (host, port))).status == 200


def test_tcp_framing_pipelined_split_and_keepalive(make_server):
    srv, [port] = make_server()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        local = spec(*conn.getsockname()[:2])
        uac = Uac("1001", "secret1001", f"127.0.0.1:{port}", local, transport="TCP")
        buffer = bytearray()
        # Two requests in one segment -> two answers in order.
        conn.sendall(uac.options() + uac.register())
        assert parse_message(read_message(conn, buffer)).status == 200
        challenge = read_message(conn, buffer)
        assert parse_message(challenge).status == 401
        # One request dribbled a few bytes at a time, with a body to frame by Content-Length.
        data = uac.register(authorization=uac.authorize(challenge))
        for i in range(0, len(data), 7):
            conn.sendall(data[i : i + 7])
            time.sleep(0.001)
        ok = parse_message(read_message(conn, buffer))
        assert ok.status == 200
        # RFC 5626 keep-alive: CRLFCRLF ping -> CRLF pong.
        conn.sendall(b"\r\n\r\n")
        assert conn.recv(16) == b"\r\n"
    rows = read_endpoints_after_flush(srv)
    assert [(r.aor, r.transport) for r in rows] == [("1001@127.0.0.1", "tcp")]


def read_endpoints_after_flush(srv: ServerThread):
    done = threading.Event()

    def flush():
        srv.server.table.flush()
        done.set()

    srv.loop.call_soon_threadsafe(flush)
    assert done.wait(5)
    return read_endpoints(srv.settings.state_path)


def test_tcp_body_is_framed_by_content_length(make_server):
    _, [port] = make_server()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        uac = Uac("1002", "x", f"127.0.0.1:{port}", "127.0.0.1:5999", transport="TCP")
        message = uac.options().replace(b"Content-Length: 0", b"Content-Length: 10")
        message += b"0123456789"
        conn.sendall(message + uac.options())
        buffer = bytearray()
        assert parse_message(read_message(conn, buffer)).status == 200
        assert parse_message(read_message(conn, buffer)).status == 200


def test_tcp_garbage_gets_400_and_close_others_unaffected(make_server):
    _, [port] = make_server()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as bad, \
            socket.create_connection(("127.0.0.1", port), timeout=5) as good:
        bad.sendall(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKb\r\n"
                    b"CSeq: nope\r\n\r\n")
        reply = bad.recv(65535)
        assert reply.startswith(b"SIP/2.0 400 ")
        assert bad.recv(65535) == b""  # closed: the framing cannot be trusted any more
        uac = Uac("1002", "x", f"127.0.0.1:{port}", "127.0.0.1:5998", transport="TCP")
        good.sendall(uac.options())
        assert parse_message(read_message(good, bytearray())).status == 200


def test_tcp_size_cap_closes_the_connection(make_server):
    _, [port] = make_server()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"OPTIONS sip:x SIP/2.0\r\nSubject: ")
        with pytest.raises((ConnectionResetError, BrokenPipeError)):  # noqa: PT012
            for _ in range(200):
                conn.sendall(b"y" * 4096)
                time.sleep(0.001)
            conn.recv(1)
            conn.sendall(b"y")
            raise ConnectionResetError


def test_idle_tcp_connection_is_closed(make_server):
    _, [port] = make_server(tcp_idle_timeout=1)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        started = time.monotonic()
        assert conn.recv(1) == b""
        assert time.monotonic() - started < 4


def test_tls_register_with_a_self_signed_certificate(make_server, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    tls_port = free_port("127.0.0.1")
    srv, [port] = make_server(tls_cert=str(cert), tls_key=str(key),
                              tls_listen=(f"127.0.0.1:{tls_port}",))
    assert f"tls:127.0.0.1:{tls_port}" in srv.server.addresses
    context = ssl.create_default_context(cafile=str(cert))
    with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as conn:
        uac = Uac("1001", "secret1001", f"127.0.0.1:{tls_port}",
                  spec(*conn.getsockname()[:2]), transport="TLS")
        buffer = bytearray()

        def send(data: bytes) -> bytes:
            conn.sendall(data)
            return read_message(conn, buffer)

        assert parse_message(register_over(send, uac)).status == 200
    rows = read_endpoints_after_flush(srv)
    assert [r.transport for r in rows] == ["tls"]


def test_tls_defaults_to_5061_on_each_listen_host():
    from floodguard.registrar.server import tls_addresses

    s = Settings(listen=("0.0.0.0:5060", "[::]:5060", "0.0.0.0:5070"), tls_cert="c",
                 tls_key="k")
    assert tls_addresses(s) == ("0.0.0.0:5061", "[::]:5061")
    assert tls_addresses(Settings(listen=("0.0.0.0:5060",))) == ()


def test_liveness_over_the_registration_connection(make_server):
    srv, [port] = make_server(time_to_live=1)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        local = spec(*conn.getsockname()[:2])
        uac = Uac("1001", "secret1001", f"127.0.0.1:{port}", local, transport="TCP")
        buffer = bytearray()

        def send(data: bytes) -> bytes:
            conn.sendall(data)
            return read_message(conn, buffer)

        assert parse_message(register_over(send, uac)).status == 200
        probe = parse_message(read_message(conn, buffer))  # OPTIONS within time_to_live
        assert probe.method == "OPTIONS" and probe.request_uri == uac.contact
        conn.sendall(
            f"SIP/2.0 200 OK\r\nVia: {probe.via}\r\nFrom: {probe.header('from')}\r\n"
            f"To: {probe.header('to')};tag=u\r\nCall-ID: {probe.call_id}\r\n"
            f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n".encode())
        time.sleep(0.3)
        assert srv.server.liveness.answers >= 1
        [row] = read_endpoints_after_flush(srv)
        assert row.online


def test_a_second_server_cannot_take_the_same_udp_port(make_server, tmp_path):
    _, [port] = make_server()
    second = RegistrarServer(Settings(listen=(f"127.0.0.1:{port}",),
                                      state_path=str(tmp_path / "other.db"), accounts=""),
                             ACCOUNTS)

    async def start() -> None:
        try:
            await second.start()
        finally:
            await second.stop()

    with pytest.raises(OSError):
        asyncio.run(start())


def test_accounts_reload(tmp_path):
    loaded = {"2001": Account("2001", password="x")}
    server = RegistrarServer(Settings(state_path=str(tmp_path / "s.db"), accounts=""), ACCOUNTS,
                             accounts_loader=lambda: loaded)
    assert server.core.auth.known("1001") and not server.core.auth.known("2001")
    server.reload_accounts()
    assert server.core.auth.known("2001") and not server.core.auth.known("1001")
    server.table.close()
