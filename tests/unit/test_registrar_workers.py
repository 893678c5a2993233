"""Several registrar workers (floodguard.registrar.workers) in one process, on loopback.

Two `WorkerServer`s share one UDP socket and the state database as forked workers do; here both
run on one event loop so each step can be sent to the worker the test chooses.
"""

import asyncio
import re
import socket
import threading
import time

import pytest

from floodguard.registrar.accounts import Account
from floodguard.registrar.bindings import read_endpoints
from floodguard.registrar.core import Settings, Source
from floodguard.registrar.uac import Uac
from floodguard.registrar.workers import (
    REQUEST,
    WorkerServer,
    _channel,
    count,
    envelope,
    open_envelope,
    owner_of,
)
from floodguard.sip import build
from floodguard.sip.message import parse_message
from tests.unit.registrar_kit import free_port, read_message

ACCOUNTS = {str(u): Account(str(u), password=f"secret{u}") for u in range(1001, 1011)}


def test_owner_is_stable_and_uses_every_worker():
    owners = {owner_of(str(user), 2) for user in range(1001, 1011)}
    assert owners == {0, 1}
    assert owner_of("1001", 2) == owner_of("1001", 2)
    assert all(owner_of("x", 1) == 0 for _ in range(3))


def test_worker_count():
    assert count(Settings(workers=3)) == 3
    assert count(Settings(workers=1)) == 1
    assert count(Settings(workers=0)) >= 1  # one per CPU


def test_envelope_round_trip():
    src = Source("tls", "2001:db8::1", 5061, "tls:[::]:5061")
    data = envelope(REQUEST, src, b"REGISTER sip:x SIP/2.0\r\n\r\n", ("::1", 5061))
    assert open_envelope(data) == (REQUEST, src, ("::1", 5061), b"REGISTER sip:x SIP/2.0\r\n\r\n")


class TwoWorkers:
    """Workers 0 and 1 on one loop in a thread, sharing a UDP socket and the state database."""

    def __init__(self, tmp_path, time_to_live: int = 60) -> None:
        self.port = free_port("127.0.0.1")
        self.settings = Settings(listen=(f"127.0.0.1:{self.port}",), workers=2, accounts="",
                                 state_path=str(tmp_path / "state.db"),
                                 time_to_live=time_to_live)
        self.loop = asyncio.new_event_loop()
        self.workers: list[WorkerServer] = []
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10) and len(self.workers) == 2

    def _run(self, ready: threading.Event) -> None:
        # SQLite connections stay in the thread that made them: everything runs in this one.
        asyncio.set_event_loop(self.loop)
        shared = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        shared.bind(("127.0.0.1", self.port))
        shared.setblocking(False)
        stream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        stream.bind(("127.0.0.1", self.port))
        channels = [_channel(), _channel()]
        key = ("127.0.0.1", self.port, int(socket.SOCK_DGRAM))
        started = time.time()
        for index in range(2):
            sockets = {key: shared if index == 0 else shared.dup()}
            if index == 0:  # TCP is worker 0's
                sockets[("127.0.0.1", self.port, int(socket.SOCK_STREAM))] = stream
            self.workers.append(WorkerServer(
                self.settings, ACCOUNTS, index=index, workers=2, inbox=channels[index][0],
                outboxes=[out for _, out in channels], sockets=sockets, started=started))
        for worker in self.workers:
            self.loop.run_until_complete(worker.start())
        ready.set()
        self.loop.run_forever()
        for worker in self.workers:
            self.loop.run_until_complete(worker.stop())
        self.loop.close()

    def handle(self, index: int, data: bytes, local_port: int) -> bytes | None:
        """Give a datagram to one worker as if it had read it from the shared socket."""
        src = Source("udp", "127.0.0.1", local_port, f"udp:127.0.0.1:{self.port}")
        done = threading.Event()
        box: list[bytes | None] = []

        def call() -> None:
            box.append(self.workers[index].core.handle_datagram(data, src))
            done.set()

        self.loop.call_soon_threadsafe(call)
        assert done.wait(5)
        return box[0]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def two(tmp_path):
    workers = TwoWorkers(tmp_path)
    yield workers
    workers.close()


def owned_by(index: int) -> str:
    return next(u for u in ACCOUNTS if owner_of(u, 2) == index)


@pytest.mark.parametrize("owner", [0, 1])
def test_a_challenge_from_one_worker_verifies_at_the_other(two, owner):
    user = owned_by(owner)
    other = 1 - owner
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.bind(("127.0.0.1", 0))
        local_port = client.getsockname()[1]
        uac = Uac(user, f"secret{user}", f"127.0.0.1:{two.port}", f"127.0.0.1:{local_port}")
        challenge = two.handle(other, uac.register(), local_port)  # stateless: answered there
        assert parse_message(challenge).status == 401
        answer = uac.register(authorization=uac.authorize(challenge))
        # the non-owner passes it on; the owner answers from the shared socket
        assert two.handle(other, answer, local_port) is None
        first = client.recv(65535)
        ok = parse_message(first)
        assert ok.status == 200 and ok.contacts[0].uri == uac.contact
        # the same credentials in a new transaction, given to the non-owner again: a replay
        replay = re.sub(rb"branch=[^;\r\n]+", b"branch=z9hG4bKreplay", answer)
        replay = replay.replace(b"CSeq: 2 ", b"CSeq: 3 ")
        assert two.handle(other, replay, local_port) is None
        assert parse_message(client.recv(65535)).status == 401
        # a retransmission of the first answer gets the same 200 (the owner's response cache)
        assert two.handle(other, answer, local_port) is None
        assert client.recv(65535) == first
    owner_table, other_table = two.workers[owner].table, two.workers[other].table
    assert [b.aor for b in owner_table] == [user] and len(other_table) == 0


def test_bindings_are_shared_through_the_database(two, tmp_path):
    users = [owned_by(0), owned_by(1)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.bind(("127.0.0.1", 0))
        local_port = client.getsockname()[1]
        for user in users:
            uac = Uac(user, f"secret{user}", f"127.0.0.1:{two.port}", f"127.0.0.1:{local_port}")
            challenge = two.handle(0, uac.register(), local_port)
            reply = two.handle(0, uac.register(authorization=uac.authorize(challenge)),
                               local_port)
            if reply is None:  # owned by worker 1: answered from the socket
                reply = client.recv(65535)
            assert parse_message(reply).status == 200
    deadline = time.monotonic() + 5
    while len(read_endpoints(two.settings.state_path)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # written behind by each owner
    assert sorted(row.aor.split("@")[0] for row in read_endpoints(two.settings.state_path)) \
        == sorted(users)
    # an INVITE decided at one worker sees the callee's bindings held by the other
    found: list[list[str]] = []
    two.loop.call_soon_threadsafe(lambda: found.append(
        [b.aor for b in two.workers[0].core.lookup.active(users[1], time.time())]))
    deadline = time.monotonic() + 5
    while not found and time.monotonic() < deadline:
        time.sleep(0.01)
    assert found == [[users[1]]]


def test_a_liveness_answer_read_by_another_worker_reaches_the_prober(tmp_path):
    two = TwoWorkers(tmp_path, time_to_live=1)
    try:
        user = owned_by(1)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            client.bind(("127.0.0.1", 0))
            local_port = client.getsockname()[1]
            uac = Uac(user, f"secret{user}", f"127.0.0.1:{two.port}",
                      f"127.0.0.1:{local_port}")
            challenge = two.handle(1, uac.register(), local_port)
            ok = two.handle(1, uac.register(authorization=uac.authorize(challenge)), local_port)
            assert parse_message(ok).status == 200
            probe = client.recv(65535)  # worker 1 probes its binding within time_to_live
            assert parse_message(probe).method == "OPTIONS"
            assert two.handle(0, build.reply(probe), local_port) is None  # read by worker 0
            deadline = time.monotonic() + 5
            while two.workers[1].liveness.answers < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert two.workers[1].liveness.answers >= 1
            assert two.workers[0].liveness.answers == 0
    finally:
        two.close()


def test_tcp_requests_and_probes_for_another_worker_go_through_worker_0(tmp_path):
    two = TwoWorkers(tmp_path, time_to_live=1)
    try:
        user = owned_by(1)
        with socket.create_connection(("127.0.0.1", two.port), timeout=5) as conn:
            local = f"127.0.0.1:{conn.getsockname()[1]}"
            uac = Uac(user, f"secret{user}", f"127.0.0.1:{two.port}", local, transport="TCP")
            buffer = bytearray()

            def send(data: bytes) -> bytes:
                conn.sendall(data)
                return read_message(conn, buffer)

            challenge = send(uac.register())
            ok = parse_message(send(uac.register(authorization=uac.authorize(challenge))))
            assert ok.status == 200  # decided by worker 1, written by worker 0
            probe = read_message(conn, buffer)  # worker 1's probe, through worker 0
            assert parse_message(probe).method == "OPTIONS"
            conn.sendall(build.reply(probe))
            deadline = time.monotonic() + 5
            while two.workers[1].liveness.answers < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert two.workers[1].liveness.answers >= 1
        assert [b.transport for b in two.workers[1].table] == ["tcp"]
        assert len(two.workers[0].table) == 0
    finally:
        two.close()
