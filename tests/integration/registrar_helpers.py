"""Helpers for the registrar integration tests: namespaces, the server process, SIPp, sockets.

Each test module builds its own pair of network namespaces joined by a veth pair (server side
and client side, addresses only inside the namespaces) and deletes them afterwards, even when a
test fails. Plain sockets are created inside the client namespace by a short-lived thread that
`setns()`s into it: a socket stays in the namespace it was created in, so the test can then use
it from its own thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from floodguard.registrar.bindings import EndpointRow, read_endpoints
from floodguard.sip import build
from floodguard.sip.message import SipMessage, parse_message

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "tests" / "assets" / "registrar"
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv" / "bin" / "python").exists() \
    else sys.executable
CLONE_NEWNET = 0x40000000

SERVER_IP, CLIENT_IP, CLIENT_IP2 = "10.77.0.1", "10.77.0.2", "10.77.0.3"
SERVER_IP6, CLIENT_IP6 = "fd77::1", "fd77::2"
USERS = [str(u) for u in range(1001, 1011)]


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


@dataclass
class NetPair:
    """A server namespace and a client namespace joined by one veth pair."""

    server_ns: str
    client_ns: str

    @classmethod
    def create(cls) -> NetPair:
        tag = secrets.token_hex(3)
        pair = cls(f"fg-reg-{tag}-s", f"fg-reg-{tag}-c")
        try:
            run("ip", "netns", "add", pair.server_ns)
            run("ip", "netns", "add", pair.client_ns)
            run("ip", "link", "add", f"fgr{tag}s", "netns", pair.server_ns, "type", "veth",
                "peer", "name", f"fgr{tag}c", "netns", pair.client_ns)
            for ns, dev, v4, v6 in ((pair.server_ns, f"fgr{tag}s", [SERVER_IP], SERVER_IP6),
                                    (pair.client_ns, f"fgr{tag}c", [CLIENT_IP, CLIENT_IP2],
                                     CLIENT_IP6)):
                run("ip", "-n", ns, "link", "set", "lo", "up")
                for addr in v4:
                    run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                run("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
                run("ip", "-n", ns, "link", "set", dev, "up")
        except BaseException:
            pair.destroy()
            raise
        return pair

    def destroy(self) -> None:
        for ns in (self.client_ns, self.server_ns):
            run("ip", "netns", "del", ns, check=False)

    @property
    def client_dev(self) -> str:
        return f"fgr{self.client_ns.split('-')[2]}c"

    @property
    def server_dev(self) -> str:
        return f"fgr{self.server_ns.split('-')[2]}s"

    def add_client_address(self, ip: str) -> None:
        """One more source address on the client side (same subnet as the others)."""
        prefix = "64" if ":" in ip else "24"
        run("ip", "-n", self.client_ns, "addr", "add", f"{ip}/{prefix}", "dev", self.client_dev,
            *(("nodad",) if ":" in ip else ()))


def in_netns(ns: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call fn in a thread that has joined network namespace `ns`; return its result."""
    box: dict[str, Any] = {}
    libc = ctypes.CDLL(None, use_errno=True)

    def target() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def udp_socket(ns: str, ip: str, port: int = 0, timeout: float = 3.0) -> socket.socket:
    """A UDP socket bound to (ip, port) inside namespace `ns`."""
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((ip, port))
        return sock

    sock = in_netns(ns, make)
    sock.settimeout(timeout)
    return sock


def tcp_socket(ns: str, ip: str, dest: tuple[str, int], timeout: float = 3.0,
               rcvbuf: int | None = None) -> socket.socket:
    """A TCP socket from `ip` inside namespace `ns`, connected to `dest`."""
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET,
                             socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:  # before connect, so the window is small from the start
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.bind((ip, 0))
        except BaseException:
            sock.close()
            raise
        return sock

    sock = in_netns(ns, make)
    sock.settimeout(timeout)
    try:
        sock.connect(dest)
    except BaseException:
        sock.close()
        raise
    return sock


def read_stream_message(conn: socket.socket, buffer: bytearray) -> SipMessage:
    """One message from a stream (headers up to CRLFCRLF, then Content-Length bytes)."""
    return parse_message(read_stream_bytes(conn, buffer), stream=True)


def read_stream_bytes(conn: socket.socket, buffer: bytearray) -> bytes:
    """The bytes of one message from a stream; `buffer` keeps what follows it."""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65535)
        if not chunk:
            raise ConnectionError("closed by the registrar")
        buffer += chunk
    end = buffer.index(b"\r\n\r\n") + 4
    length = parse_message(bytes(buffer[:end]), stream=True).content_length or 0
    while len(buffer) < end + length:
        chunk = conn.recv(65535)
        if not chunk:
            raise ConnectionError("closed by the registrar")
        buffer += chunk
    message = bytes(buffer[: end + length])
    del buffer[: end + length]
    return message


def stream_exchange(conn: socket.socket, data: bytes, buffer: bytearray) -> SipMessage:
    """Send a request on a stream and return the first response (skipping OPTIONS probes)."""
    conn.sendall(data)
    while True:
        msg = read_stream_message(conn, buffer)
        if not msg.is_request:
            return msg


def rss_kb(pid: int) -> int:
    """Resident memory of a process (VmRSS) in kB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def self_signed(tmp: Path, ip: str = SERVER_IP) -> tuple[Path, Path]:
    """A throwaway certificate and key for the registrar's TLS listener."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=registrar",
        "-addext", f"subjectAltName=IP:{ip}")
    return cert, key


def host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def exchange(sock: socket.socket, data: bytes, dest: tuple[str, int]) -> SipMessage:
    """Send a request and return the first response (skipping stray OPTIONS probes)."""
    sock.sendto(data, dest)
    deadline = time.monotonic() + sock.gettimeout()
    while True:
        reply, _ = sock.recvfrom(65535)
        msg = parse_message(reply)
        if not msg.is_request:
            return msg
        if time.monotonic() > deadline:
            raise TimeoutError("no response")


def write_config(tmp: Path, *, listen: list[str], **registrar: Any) -> Path:
    """fg.toml + accounts.toml (users 1001..1010, password "secret<user>") in `tmp`."""
    accounts = tmp / "accounts.toml"
    accounts.write_text("".join(f'[[account]]\nuser = "{u}"\npassword = "secret{u}"\n'
                                for u in USERS))
    lines = ["[registrar]", f"listen = {json.dumps(listen)}",
             f"accounts = {json.dumps(str(accounts))}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in registrar.items()]
    lines += ["[state]", f'path = "{tmp / "state.db"}"', ""]
    path = tmp / "fg.toml"
    path.write_text("\n".join(lines))
    return path


class Registrar:
    """The real registrar process (`python -m floodguard.registrar.commands registrar`) in a
    namespace."""

    def __init__(self, pair: NetPair, config: Path, log: Path) -> None:
        self.pair = pair
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.db = config.parent / "state.db"

    def start(self, timeout: float = 15.0) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.pair.server_ns, PYTHON, "-m",
                 "floodguard.registrar.commands", "registrar", "-c", str(self.config), "-v"],
                stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
            )
        probe = udp_socket(self.pair.client_ns, CLIENT_IP, timeout=0.3)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"registrar exited at start:\n{self.log.read_text()}")
                with contextlib.suppress(OSError, TimeoutError):
                    options = build.options(f"sip:{SERVER_IP}:5060",
                                            local=f"{CLIENT_IP}:{probe.getsockname()[1]}",
                                            from_uri="sip:probe@test", call_id="ready@test")
                    if exchange(probe, options, (SERVER_IP, 5060)).status == 200:
                        return
            raise AssertionError(f"registrar not answering:\n{self.log.read_text()}")
        finally:
            probe.close()

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            raise AssertionError("registrar did not stop on SIGTERM") from None

    def endpoints(self) -> list[EndpointRow]:
        return read_endpoints(self.db)

    def wait_for(self, predicate: Callable[[list[EndpointRow]], bool], timeout: float,
                 step: float = 0.1) -> float:
        """Poll the database until predicate(rows); returns the seconds it took."""
        start = time.monotonic()
        while True:
            if predicate(self.endpoints()):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError(f"condition not met in {timeout} s: {self.endpoints()}")
            time.sleep(step)


@contextlib.contextmanager
def registrar_env(tmp: Path, **registrar: Any) -> Iterator[tuple[NetPair, Registrar]]:
    """Namespaces + a running registrar; everything is removed on exit, even on failure."""
    pair = NetPair.create()
    server: Registrar | None = None
    try:
        listen = registrar.pop("listen", [f"{SERVER_IP}:5060"])
        config = write_config(tmp, listen=listen, **registrar)
        server = Registrar(pair, config, tmp / "registrar.log")
        server.start()
        yield pair, server
    finally:
        try:
            if server is not None:
                server.stop()
        finally:
            pair.destroy()


def sipp(pair: NetPair, scenario: str, *, user_lines: list[str], port: int, cwd: Path,
         transport: str = "u1", calls: int | None = None, rate: int | None = None,
         local_ip: str = CLIENT_IP, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a SIPp UAC scenario from the client namespace; `user_lines` are injection rows.
    `scenario` is a file in ASSETS, or an absolute path (e.g. from `invite_scenario`)."""
    inf = cwd / f"users-{secrets.token_hex(3)}.csv"
    inf.write_text("SEQUENTIAL\n" + "\n".join(user_lines) + "\n")
    cmd = ["ip", "netns", "exec", pair.client_ns, "sipp", "-sf", str(ASSETS / scenario),
           "-inf", str(inf), f"{SERVER_IP}:5060", "-i", local_ip, "-p", str(port),
           "-t", transport, "-m", str(calls or len(user_lines)), "-nostdin",
           "-recv_timeout", "4000", "-timeout", f"{int(timeout)}s", "-timeout_error",
           "-trace_err", "-error_file", str(cwd / f"sipp-{scenario}-{port}.err")]
    if rate is not None:
        cmd += ["-r", str(rate)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 10, cwd=cwd)


def auth_line(user: str, password: str | None = None, expires: int = 3600) -> str:
    """An injection row for register.xml / register_rejected.xml."""
    return (f"{user};[authentication username={user} password={password or 'secret' + user}];"
            f"{expires}")


_INVITE_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!-- Authenticated INVITE expecting {status}. Injection fields: 0 callee, 1 [authentication ...]
     of the caller. -->
<scenario name="invite {status} (authenticated)">
  <send retrans="500">
    <![CDATA[
INVITE sip:[field0]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:caller@[local_ip]>;tag=[call_number]
To: <sip:[field0]@[remote_ip]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:caller@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="401" auth="true"/>
  <send>
    <![CDATA[
ACK sip:[field0]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-3]
From: <sip:caller@[local_ip]>;tag=[call_number]
To: <sip:[field0]@[remote_ip]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
INVITE sip:[field0]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:caller@[local_ip]>;tag=[call_number]
To: <sip:[field0]@[remote_ip]>
Call-ID: [call_id]
CSeq: 2 INVITE
Contact: <sip:caller@[local_ip]:[local_port]>
[field1]
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="{status}"/>
  <send>
    <![CDATA[
ACK sip:[field0]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-3]
From: <sip:caller@[local_ip]>;tag=[call_number]
To: <sip:[field0]@[remote_ip]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 ACK
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
</scenario>
"""


def invite_scenario(tmp: Path, status: int) -> str:
    """A SIPp scenario (written into `tmp`) for an INVITE that authenticates after the
    registrar's 401 and expects `status` (302, 480 or 404); rows from `invite_line`."""
    path = tmp / f"invite_auth_{status}.xml"
    path.write_text(_INVITE_SCENARIO.format(status=status))
    return str(path)


def invite_line(callee: str, caller: str = "1009") -> str:
    """An injection row for `invite_scenario`: the callee and the caller's credentials."""
    return f"{callee};[authentication username={caller} password=secret{caller}]"


def sipp_error(result: subprocess.CompletedProcess[str], cwd: Path) -> str:
    logs = "".join(p.read_text(errors="replace")[-3000:] for p in cwd.glob("sipp-*.err"))
    return (f"sipp exit {result.returncode}\n{result.stdout[-2000:]}\n"
            f"{result.stderr[-2000:]}\n{logs}")


_VARIABLE = [
    (re.compile(rb'nonce="[^"]*"'), b'nonce="N"'),
    (re.compile(rb";tag=[^;>,\s]*"), b";tag=T"),
    (re.compile(rb"^(Call-ID|i):[^\r\n]*", re.M | re.I), b"Call-ID: C"),
    (re.compile(rb"^Date:[^\r\n]*\r\n", re.M | re.I), b""),
]


def normalize(response: bytes, *names: str) -> bytes:
    """A response with what may differ between two otherwise identical requests blanked out:
    nonces, tags, the Call-ID, the Date, and `names` (e.g. the user the request was for)."""
    for pattern, blank in _VARIABLE:
        response = pattern.sub(blank, response)
    for name in names:
        response = response.replace(name.encode(), b"USER")
    return response
