"""Stream connections on loopback (no root): output flow control, drops, per-source slots."""

import select
import socket
import threading
import time

import pytest

from floodguard.registrar.core import Settings
from floodguard.registrar.streams import WRITE_HARD_CAP, WRITE_HIGH, source_key
from floodguard.registrar.uac import Uac
from floodguard.sip.message import parse_message
from tests.unit.registrar_kit import ServerThread, free_port, read_message, spec


@pytest.fixture
def make_server(tmp_path):
    started: list[ServerThread] = []

    def make(**overrides) -> tuple[ServerThread, int]:
        port = free_port("127.0.0.1")
        values = {"listen": (f"127.0.0.1:{port}",), "state_path": str(tmp_path / "state.db"),
                  "accounts": ""}
        values.update(overrides)
        srv = ServerThread(Settings(**values))
        started.append(srv)
        return srv, port

    yield make
    for srv in started:
        srv.stop()


def on_loop(srv: ServerThread, fn):
    """fn() run on the server's event loop (its state is only safe to read there)."""
    box: dict = {}
    done = threading.Event()

    def call():
        try:
            box["value"] = fn()
        finally:
            done.set()

    srv.loop.call_soon_threadsafe(call)
    assert done.wait(5)
    return box.get("value")


def conn_state(srv: ServerThread):
    def read():
        return [(c.blocked_since is not None, c.transport.get_write_buffer_size()
                 if c.transport else 0) for c in srv.server.conns.values()]
    return on_loop(srv, read)


def big_register(port: int, local: str, vias: int = 60) -> bytes:
    """An unauthenticated REGISTER with a large Via set: its 401 copies every Via."""
    uac = Uac("1001", "x", f"127.0.0.1:{port}", local, transport="TCP")
    extra = "".join(f"Via: SIP/2.0/TCP 198.51.100.{i % 250}:5060;branch=z9hG4bK{i:0>120}\r\n"
                    for i in range(vias))
    return uac.register().replace(b"Max-Forwards:", extra.encode() + b"Max-Forwards:", 1)


def flood_without_reading(conn: socket.socket, data: bytes, seconds: float) -> bool:
    """Send `data` over and over for up to `seconds`, never reading; True once reset."""
    conn.setblocking(False)
    deadline = time.monotonic() + seconds
    pending = memoryview(data)
    while time.monotonic() < deadline:
        select.select([], [conn], [], 0.05)
        try:
            sent = conn.send(pending)
        except BlockingIOError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return True
        pending = pending[sent:] if sent < len(pending) else memoryview(data)
    return False


def test_source_key_groups_ipv6_by_64_and_unmaps_ipv4():
    assert source_key("192.0.2.7") == "192.0.2.7"
    assert source_key("2001:db8:1:2:a:b:c:d") == source_key("2001:db8:1:2::99") \
        == "2001:db8:1:2::"
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert source_key("fe80::1%eth0") == "fe80::1%eth0"  # scoped: counted per address
    assert source_key("not an address") == "not an address"


def test_client_that_never_reads_is_paused_then_dropped(make_server):
    srv, port = make_server(tcp_write_timeout=1.0)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as hog:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        data = big_register(port, spec(*hog.getsockname()[:2]))
        assert not flood_without_reading(hog, data, 0.8)
        [(blocked, unsent)] = conn_state(srv)
        # Reading paused at the high-water mark: at most one more answer queued past it.
        assert blocked and WRITE_HIGH <= unsent <= WRITE_HIGH + 2 * len(data)
        assert flood_without_reading(hog, data, 4.0)  # dropped after tcp_write_timeout
    assert on_loop(srv, lambda: len(srv.server.conns)) == 0
    assert on_loop(srv, lambda: srv.server.dropped["peer did not read its answers"]) == 1


def test_slow_reader_gets_every_answer_in_order(make_server):
    srv, port = make_server(tcp_write_timeout=30.0)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        uac = Uac("1002", "x", f"127.0.0.1:{port}", spec(*conn.getsockname()[:2]),
                  transport="TCP")
        count = 3000
        requests = [uac.options().replace(b"CSeq: 1 ", f"CSeq: {i} ".encode())
                    for i in range(1, count + 1)]
        sender = threading.Thread(target=conn.sendall, args=(b"".join(requests),))
        sender.start()
        time.sleep(0.5)  # not reading: the server must pause, not buffer everything
        [(blocked, unsent)] = conn_state(srv)
        assert blocked and unsent <= WRITE_HIGH + 4096
        buffer = bytearray()
        seqs = [parse_message(read_message(conn, buffer)).cseq_num for _ in range(count)]
        sender.join(5)
        assert seqs == list(range(1, count + 1))
    assert not on_loop(srv, lambda: sum(srv.server.dropped.values()))


def test_close_with_unread_output_is_aborted_after_the_write_timeout(make_server):
    # A connection closed (lost framing, idle) while answers are still queued: a plain close
    # waits for the peer to read them, which a hostile peer never does.
    srv, port = make_server(tcp_write_timeout=1.0)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as hog:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        time.sleep(0.2)

        def queue_and_close():
            [conn] = srv.server.conns.values()
            conn.write(b"x" * 600_000)  # more than the kernel takes: some stays with us
            unsent = conn.transport.get_write_buffer_size()
            conn.close()
            return unsent

        assert on_loop(srv, queue_and_close) > 0
        deadline = time.monotonic() + 4
        while on_loop(srv, lambda: len(srv.server.conns)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert on_loop(srv, lambda: len(srv.server.conns)) == 0
        assert on_loop(srv, lambda: srv.server.dropped["peer did not read its answers"]) == 1


def test_per_source_cap_leaves_room_for_other_sources(make_server):
    srv, port = make_server(max_connections=6, max_connections_per_source=3)
    hogs = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(5)]
    try:
        time.sleep(0.3)
        alive = []
        for hog in hogs:
            hog.setblocking(False)
            try:
                alive.append(hog.recv(1) != b"")
            except BlockingIOError:
                alive.append(True)
            except ConnectionResetError:
                alive.append(False)
        assert alive.count(True) == 3
        assert on_loop(srv, lambda: srv.server.dropped["max_connections_per_source"]) == 2
        # Another source still gets in and is served.
        with socket.socket() as other:
            other.bind(("127.0.0.2", 0))
            other.settimeout(5)
            other.connect(("127.0.0.1", port))
            uac = Uac("1002", "x", f"127.0.0.1:{port}", spec(*other.getsockname()[:2]),
                      transport="TCP")
            other.sendall(uac.options())
            assert parse_message(read_message(other, bytearray())).status == 200
        # A closed connection gives its slot back.
        for hog, ok in zip(hogs, alive, strict=True):
            if ok:
                hog.close()
                break
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as again:
            again.sendall(uac.options())
            assert parse_message(read_message(again, bytearray())).status == 200
    finally:
        for hog in hogs:
            hog.close()


def test_hard_cap_drops_at_once(make_server):
    # Output queued without reading input (liveness probes, pongs) cannot pass the hard cap.
    srv, port = make_server()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as hog:
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        time.sleep(0.2)

        def stuff():
            [conn] = srv.server.conns.values()
            chunk = b"x" * 65536
            return any(not conn.write(chunk) for _ in range(WRITE_HARD_CAP // len(chunk) + 64))

        assert on_loop(srv, stuff)
    assert on_loop(srv, lambda: srv.server.dropped["unsent output over the hard cap"]) == 1


def test_the_per_source_cap_counts_ipv6_by_the_configured_prefix() -> None:
    from floodguard.config import loads
    from floodguard.registrar.core import Settings
    from floodguard.registrar.streams import source_key

    assert Settings.from_config(loads("[limits]\nipv6_prefix = 48\n")).ipv6_prefix == 48
    assert source_key("2001:db8:1:2::5", 64) == "2001:db8:1:2::"
    assert source_key("2001:db8:1:2::5", 48) == "2001:db8:1::"
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
