"""A real redis-server on loopback for the fleet tests (Debian package; started per test,
fails when missing, never skips) and fleet nodes: FleetLink objects with their own state
store and in-memory kernel sets (tests/kernelfake.py), stepped by the test."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from floodguard.config import loads
from floodguard.events import EventLog
from floodguard.fleet import FleetLink
from floodguard.store import Store
from tests.kernelfake import KernelSets


def free_port() -> int:
    """A free TCP port below 55000 (a cluster node also listens on port + 10000)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < 55000:
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: run `sudo make deps` (apt install redis-server)",
                    pytrace=False)
    return path


class RedisServer:
    """One redis-server on 127.0.0.1 without persistence: a restart comes back empty."""

    def __init__(self, tmp: Path, *args: str, port: int | None = None, tls: bool = False,
                 name: str = "redis", conf: Path | None = None) -> None:
        self.tmp = tmp
        self.conf = [str(conf)] if conf else []
        self.port = port or free_port()
        self.args = list(args)
        self.tls = tls
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        require("redis-server")
        port = ["--port", "0", "--tls-port", str(self.port)] if self.tls else \
            ["--port", str(self.port)]
        self.proc = subprocess.Popen(
            ["redis-server", *self.conf, "--bind", "127.0.0.1", *port, "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp),
             "--logfile", str(self.tmp / f"{self.name}-{self.port}.log"), *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.02)
        raise AssertionError(f"redis-server did not start on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


@pytest.fixture
def servers(tmp_path):
    started: list[RedisServer] = []

    def make(*args: str, **kwargs) -> RedisServer:
        server = RedisServer(tmp_path, *args, **kwargs)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def redis_server(servers) -> RedisServer:
    return servers()


class Node:
    """A fleet node: config, state store, recorded kernel sets and its link, stepped by hand."""

    def __init__(self, tmp: Path, name: str, url: str, extra: str = "") -> None:
        self.name = name
        self.path = tmp / f"{name}.db"
        self.cfg = loads(f'[state]\npath = "{self.path}"\n[fleet]\nredis_url = "{url}"\n'
                         f'node = "{name}"\n' + extra)
        self.sets = KernelSets()
        self.log = io.StringIO()
        self.store = Store(self.path)
        self.link = FleetLink(self.cfg, EventLog(self.log, json_mode=True),
                              lambda: Store(self.path), lambda: self.sets,
                              writer_factory=KernelSets.writer)

    def step(self, times: int = 1) -> None:
        for _ in range(times):
            self.link.step(self.store, self.sets)

    def until(self, condition, seconds: float = 5.0) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, f"{self.name}: timed out; events: {self.events()}"
            self.step()

    def banned(self, ip: str) -> bool:
        return self.sets.test("ban", ip)

    def events(self, name: str | None = None) -> list[dict]:
        out = [json.loads(line) for line in self.log.getvalue().splitlines()]
        return [e for e in out if name is None or e["event"] == name]


def nodes(tmp_path, url: str, *names: str, extra: dict[str, str] | None = None) -> list[Node]:
    made = [Node(tmp_path, n, url, (extra or {}).get(n, "")) for n in names]
    for node in made:
        assert node.link.load(2.0)
    for node in made:
        node.until(lambda n=node: n.link.up)
    return made
