"""floodguard.registrar._udp on real loopback sockets: batched reads and writes, IPv4 and IPv6,
edge sizes, bad items, a queued ICMP error and a closed descriptor."""

import socket
import time

import pytest

from floodguard.registrar._udp import MAX_BATCH, recv_batch, send_batch


def _pair(host: str = "127.0.0.1") -> tuple[socket.socket, socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.socket(family, socket.SOCK_DGRAM)
    server.bind((host, 0))
    server.setblocking(False)
    client = socket.socket(family, socket.SOCK_DGRAM)
    client.bind((host, 0))
    client.settimeout(2)
    return server, client


def _wait_readable(sock: socket.socket) -> None:
    import select
    assert select.select([sock], [], [], 2)[0], "nothing arrived"


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_reads_a_batch_in_order_with_each_source(host: str) -> None:
    server, client = _pair(host)
    with server, client:
        assert recv_batch(server.fileno(), 8) == []  # nothing waiting: no block, no error
        for i in range(MAX_BATCH + 10):
            client.sendto(b"datagram %d" % i, server.getsockname()[:2])
        _wait_readable(server)
        first = recv_batch(server.fileno(), 1000)  # asks for more than a batch holds
        rest = recv_batch(server.fileno(), 1000)
        assert len(first) == MAX_BATCH
        got = first + rest
        assert [data for data, _, _ in got] == [b"datagram %d" % i for i in range(MAX_BATCH + 10)]
        assert {(ip, port) for _, ip, port in got} == {client.getsockname()[:2]}
        assert recv_batch(server.fileno(), 8) == []


def test_a_count_below_one_still_reads_one() -> None:
    server, client = _pair()
    with server, client:
        for i in range(3):
            client.sendto(b"x%d" % i, server.getsockname())
        _wait_readable(server)
        assert [d for d, _, _ in recv_batch(server.fileno(), 0)] == [b"x0"]
        assert [d for d, _, _ in recv_batch(server.fileno(), 2)] == [b"x1", b"x2"]


def test_largest_and_empty_datagrams_arrive_whole() -> None:
    server, client = _pair()
    with server, client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        big = bytes(range(256)) * 255 + b"z" * 227  # 65507: the most IPv4 UDP carries
        assert len(big) == 65507
        client.sendto(big, server.getsockname())
        client.sendto(b"", server.getsockname())
        client.sendto(big[::-1], server.getsockname())
        _wait_readable(server)
        deadline = time.monotonic() + 2
        got: list[bytes] = []
        while len(got) < 3 and time.monotonic() < deadline:
            got += [d for d, _, _ in recv_batch(server.fileno(), 8)]
        assert got == [big, b"", big[::-1]]


def test_writes_a_batch_and_counts_what_left() -> None:
    server, client = _pair("::1")
    with server, client:
        ip, port = client.getsockname()[:2]
        items = [(b"answer %d" % i, ip, port) for i in range(150)]  # more than one sendmmsg
        assert send_batch(server.fileno(), items) == 150
        assert [client.recv(100) for _ in range(150)] == [d for d, _, _ in items]


def test_bad_items_are_skipped_and_the_rest_still_sent() -> None:
    server, client = _pair()
    with server, client:
        ip, port = client.getsockname()
        bad = [
            ("not bytes", ip, port), (b"no port", ip), (b"bad ip", "999.1.1.1", port),
            (b"name", "localhost", port), (b"negative", ip, -1), (b"too big", ip, 70000),
            (b"ipv6 on an IPv4 socket", "::1", port), (b"port as text", ip, str(port)),
            None, (b"nul", "127.0.0.1\x00x", port),
        ]
        items = [item for pair in zip(bad, [(b"good %d" % i, ip, port) for i in range(10)],
                                      strict=True) for item in pair]
        assert send_batch(server.fileno(), items) == 10
        assert [client.recv(100) for _ in range(10)] == [b"good %d" % i for i in range(10)]
        client.settimeout(0.2)
        with pytest.raises(TimeoutError):
            client.recv(100)


def test_a_scoped_ipv6_address_is_read_with_its_scope() -> None:
    """fe80::1%eth0 or fe80::1%2, as socket.recvfrom writes a link-local source (the scope is
    what matters there: tests/integration/test_registrar_link_local.py); an unknown or empty
    scope is not an address."""
    server, client = _pair("::1")
    with server, client:
        ip, port = client.getsockname()[:2]
        lo = socket.if_nameindex()[0]
        items = [(b"by name", f"{ip}%{lo[1]}", port), (b"unknown", f"{ip}%nosuchif0", port),
                 (b"by index", f"{ip}%{lo[0]}", port), (b"empty", f"{ip}%", port),
                 (b"junk index", f"{ip}%{lo[0]}x", port), (b"long", f"{ip}%{'x' * 80}", port)]
        assert send_batch(server.fileno(), items) == 2
        assert [client.recv(100) for _ in range(2)] == [b"by name", b"by index"]


def _closed_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


IP_RECVERR = 11  # linux/in.h (the socket module does not name it)


def _queue_icmp_error(sock: socket.socket, port: int) -> None:
    """Linux reports an ICMP port-unreachable to an unconnected UDP socket only with
    IP_RECVERR set; then the next read fails with it."""
    sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    send_batch(sock.fileno(), [(b"to nobody", "127.0.0.1", port)])
    time.sleep(0.2)


def test_a_queued_icmp_error_does_not_stop_the_reading() -> None:
    port = _closed_port("127.0.0.1")
    # The same conditions on a plain socket: recvfrom raises, so the error really is queued.
    witness, _ = _pair()
    with witness, _:
        _queue_icmp_error(witness, port)
        with pytest.raises(ConnectionRefusedError):
            witness.recvfrom(100)
    server, client = _pair()
    with server, client:
        _queue_icmp_error(server, port)
        client.sendto(b"after the error", server.getsockname())
        _wait_readable(server)
        assert [d for d, _, _ in recv_batch(server.fileno(), 8)] == [b"after the error"]


def test_a_closed_descriptor_raises() -> None:
    server, client = _pair()
    fd = server.fileno()
    server.close()
    client.close()
    with pytest.raises(OSError):
        recv_batch(fd, 8)
    with pytest.raises(OSError):
        send_batch(fd, [(b"x", "127.0.0.1", 9)])
    with pytest.raises(ValueError):
        recv_batch(-1, 8)
