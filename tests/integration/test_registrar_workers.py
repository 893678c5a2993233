"""The registrar forked into two workers (floodguard.registrar.workers.run) on loopback.

Every account registers from several sockets (whichever worker reads a datagram answers it or
passes it to the owner), the bindings of both workers reach the state database, SIGHUP and
SIGTERM reach every worker, and a worker that dies takes the others down (exit status 1).
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from floodguard.registrar.bindings import read_endpoints
from floodguard.registrar.uac import Uac
from floodguard.sip.message import parse_message
from tests.unit.registrar_kit import free_port

REPO = Path(__file__).resolve().parents[2]
USERS = [str(u) for u in range(1001, 1011)]


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


@pytest.fixture
def registrar(tmp_path):
    accounts = tmp_path / "accounts.toml"
    accounts.write_text("".join(f'[[account]]\nuser = "{u}"\npassword = "secret{u}"\n'
                                for u in USERS))
    port = free_port("127.0.0.1")
    state = tmp_path / "state.db"
    code = (
        "from floodguard.registrar.core import Settings\n"
        "from floodguard.registrar import server\n"
        f"server.run(Settings(listen=('127.0.0.1:{port}',), accounts={str(accounts)!r}, "
        f"state_path={str(state)!r}, workers=2))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while len(children(proc.pid)) < 2 or not answers(port):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)
    workers = children(proc.pid)  # read now: once the supervisor is gone they are nobody's
    yield proc, port, state
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for pid in workers:  # should a test have failed before they stopped
        signal_worker(pid, port, signal.SIGKILL)


def signal_worker(pid: int, port: int, signum: int) -> None:
    """Signal a worker of the registrar on `port` if it still runs (never a reused pid)."""
    with contextlib.suppress(OSError):
        if f"127.0.0.1:{port}".encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signum)


def answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        uac = Uac("1001", "x", f"127.0.0.1:{port}", "127.0.0.1:5999")
        try:
            sock.sendto(uac.options(), ("127.0.0.1", port))
            return parse_message(sock.recv(65535)).status == 200
        except OSError:
            return False


def register_all(port: int, rounds: int = 3) -> int:
    ok = 0
    for _ in range(rounds):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.bind(("127.0.0.1", 0))
            local = f"127.0.0.1:{sock.getsockname()[1]}"
            for user in USERS:
                uac = Uac(user, f"secret{user}", f"127.0.0.1:{port}", local)
                sock.sendto(uac.register(), ("127.0.0.1", port))
                challenge = sock.recv(65535)
                assert parse_message(challenge).status == 401
                sock.sendto(uac.register(authorization=uac.authorize(challenge)),
                            ("127.0.0.1", port))
                reply = parse_message(sock.recv(65535))
                assert reply.status == 200, reply
                assert uac.contact in [c.uri for c in reply.contacts]
                ok += 1
    return ok


def test_two_workers_register_everyone_and_stop_cleanly(registrar):
    proc, port, state = registrar
    assert len(children(proc.pid)) == 2
    assert register_all(port) == 3 * len(USERS)
    proc.send_signal(signal.SIGHUP)  # reload accounts in every worker
    time.sleep(0.3)
    assert register_all(port, rounds=1) == len(USERS)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    rows = read_endpoints(state)
    # 4 sockets per user: every binding of both workers was written before they exited
    assert sorted({row.aor.split("@")[0] for row in rows}) == USERS
    assert len(rows) == 4 * len(USERS)


def test_a_dead_worker_stops_the_registrar(registrar):
    proc, _, _ = registrar
    victim = children(proc.pid)[1]
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(15) == 1


def test_workers_stop_when_the_supervisor_is_killed(registrar):
    """SIGKILL of the supervisor (OOM, an operator's kill -9) must not leave orphaned workers
    holding the port: a restarted registrar could not bind it. They stop cleanly instead."""
    proc, port, state = registrar
    assert register_all(port, rounds=1) == len(USERS)
    workers = children(proc.pid)
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() and not zombie(pid) for pid in workers):
        assert time.monotonic() < deadline, f"orphaned workers still running: {workers}"
        time.sleep(0.1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))  # free again
    # a clean stop: every binding was flushed on the way out
    assert sorted({row.aor.split("@")[0] for row in read_endpoints(state)}) == USERS


def test_repeated_stop_signals_never_cut_the_final_flush(registrar):
    """systemd signals every process of the unit and the supervisor passes its own SIGTERM on,
    so a worker often gets two: one arriving during the final flush must not kill it there.
    The storm below makes that late signal certain; the supervisor fails on an unclean stop."""
    proc, port, state = registrar
    workers = children(proc.pid)
    assert register_all(port, rounds=1) == len(USERS)
    for pid in [proc.pid, *workers]:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while proc.poll() is None:
        assert time.monotonic() < deadline, "the registrar did not stop"
        for pid in workers:
            signal_worker(pid, port, signal.SIGTERM)
        time.sleep(0.001)
    assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
    assert sorted({row.aor.split("@")[0] for row in read_endpoints(state)}) == USERS


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def sleeps(pid: int) -> int:
    """How many times a process blocked (each wakeup from epoll ends in one more)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError(f"no voluntary_ctxt_switches for {pid}")


def test_a_datagram_wakes_one_idle_worker_not_both(registrar):
    """Both workers read one UDP socket; each request sent to idle workers must wake one of
    them (as Kamailio's children block in recvfrom), not both with one reading nothing."""
    proc, port, _ = registrar
    workers = children(proc.pid)
    requests = 300
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.bind(("127.0.0.1", 0))
        uac = Uac("1001", "x", f"127.0.0.1:{port}", f"127.0.0.1:{sock.getsockname()[1]}")
        before = sum(sleeps(pid) for pid in workers)
        started = time.monotonic()
        for _ in range(requests):
            sock.sendto(uac.options(), ("127.0.0.1", port))
            assert parse_message(sock.recv(65535)).status == 200
            time.sleep(0.002)  # both workers idle again before the next one
        elapsed = time.monotonic() - started
        woken = sum(sleeps(pid) for pid in workers) - before
    # one wakeup per request, plus each worker's 10 housekeeping ticks a second; a wakeup of
    # both workers per request would be about twice the requests
    ticks = 2 * 10 * (elapsed + 1)
    assert woken < 1.4 * requests + ticks, (woken, requests, ticks)
