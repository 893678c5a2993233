"""Loopback helpers for the registrar's transport tests (no root): ports, a server thread,
reading one message from a stream. Shared by test modules, which never import each other."""

import asyncio
import socket
import threading

from floodguard.registrar.accounts import Account
from floodguard.registrar.core import Settings
from floodguard.registrar.server import RegistrarServer
from floodguard.sip.message import parse_message

ACCOUNTS = {"1001": Account("1001", password="secret1001"),
            "1002": Account("1002", password="secret1002")}


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(100):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as udp:
                udp.bind((host, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port")


def spec(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ServerThread:
    """A RegistrarServer on its own event loop in a thread, so tests can use plain sockets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.server: RegistrarServer | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(10)
        if self.error:
            raise self.error

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.server = RegistrarServer(self.settings, ACCOUNTS)
            self.loop.run_until_complete(self.server.start())
        except BaseException as exc:
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.server.stop())
        self.loop.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def read_message(conn: socket.socket, buffer: bytearray) -> bytes:
    """One message from a stream (headers up to CRLFCRLF, then Content-Length bytes)."""
    while b"\r\n\r\n" not in buffer:
        chunk = conn.recv(65535)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk
    end = buffer.index(b"\r\n\r\n") + 4
    length = parse_message(bytes(buffer[:end]), stream=True).content_length or 0
    while len(buffer) < end + length:
        buffer += conn.recv(65535)
    message = bytes(buffer[: end + length])
    del buffer[: end + length]
    return message
