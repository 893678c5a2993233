"""Fixtures for the kernel integration tests: private network namespaces and a two-namespace lab.

Every test builds its own namespaces (named ``fg-<random>-<role>``), joined by a veth pair whose
addresses (10.250.0.0/24, fd00:fa::/48) exist only inside them, runs the real CLI there with
``ip netns exec`` and deletes everything in teardown, also when the test fails. Nothing touches
the host's own firewall or sets. These tests need root and a real kernel: each module carries
``pytestmark = pytest.mark.root(<tools>)``, and without root or a tool they fail (never skip;
see tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
SIPNET = HERE / "sipnet.py"
FLOODGUARD = Path(sys.executable).with_name("floodguard")

SERVER4, SERVER6 = "10.250.0.1", "fd00:fa::1"
CLIENTS4 = ["10.250.0.2", "10.250.0.3", "10.250.0.4", "10.250.0.5"]
# IPv6 sources are limited per /64, so each client source sits in its own /64 of a /48 link;
# NEIGHBOUR6 shares the first source's /64.
CLIENTS6 = ["fd00:fa:0:1::2", "fd00:fa:0:2::3", "fd00:fa:0:3::4", "fd00:fa:0:4::5"]
NEIGHBOUR6 = "fd00:fa:0:1::9"
# The classic rule that lets banned sources through when it sits before the ban.
FOREIGN_TOP = ["-m", "conntrack", "--ctstate", "ESTABLISHED", "-j", "ACCEPT"]


def _sh(argv: list[str], *, check: bool = True, stdin: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=120,
                            env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n"
                             f"{result.stdout}{result.stderr}")
    return result


@dataclass
class Netns:
    """A namespace this test created; commands run inside it with ip netns exec."""

    name: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def run(self, *argv: str, check: bool = True, stdin: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return _sh(["ip", "netns", "exec", self.name, *argv], check=check, stdin=stdin,
                   env=env)

    def sh(self, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-c", command, check=check)

    def popen(self, *argv: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *argv],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def floodguard(self, *args: str, check: bool = True,
                   env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.run(str(FLOODGUARD), *args, check=check, env=env)

    def python(self, code: str) -> str:
        return self.run(sys.executable, "-c", code).stdout

    def save(self, backend: str) -> str:
        """iptables-save of both families without timestamps and policy counters (stray IPv6
        neighbour discovery on the veth moves those)."""
        out = []
        for tool in (f"iptables-{backend}-save", f"ip6tables-{backend}-save"):
            text = self.run(tool).stdout
            out.append("\n".join(re.sub(r"^(:\S+ \S+) \[\d+:\d+\]$", r"\1 [0:0]", ln)
                                 for ln in text.splitlines() if not ln.startswith("#")))
        return "\n".join(out)

    def ipset_list(self) -> str:
        return self.run("ipset", "list").stdout

    def show(self, config: Path) -> dict[str, Any]:
        return json.loads(self.floodguard("show", "--json", "-c", str(config)).stdout)


# Every namespace the fixtures made in this run, by inode: the session-end check in
# tests/conftest.py looks for processes still inside one of them after its name is gone.
NETNS_INODES: set[int] = set()


def create_netns(role: str) -> Netns:
    """A new namespace ``fg-<random>-<role>`` with its loopback up."""
    name = f"fg-{secrets.token_hex(4)}-{role}"
    _sh(["ip", "netns", "add", name])
    NETNS_INODES.add(os.stat(f"/run/netns/{name}").st_ino)
    ns = Netns(name)
    try:
        ns.run("ip", "link", "set", "lo", "up")
    except AssertionError:
        _sh(["ip", "netns", "del", name], check=False)
        raise
    return ns


def netns_pids(name: str) -> list[int]:
    return [int(pid) for pid in _sh(["ip", "netns", "pids", name], check=False).stdout.split()]


def remove_netns(ns: Netns) -> None:
    """Kill every process in the namespace, wait until none is left, delete the namespace.

    Killing only the processes the test started is not enough: a daemon's children (Kamailio
    forks its workers) outlive it, orphaned in a namespace that no name points to any more.
    """
    for proc in ns.procs:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10
    left = netns_pids(ns.name)
    while left and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
        left = netns_pids(ns.name)
    for proc in ns.procs:
        proc.communicate()
    _sh(["ip", "netns", "del", ns.name], check=False)
    if left:
        raise AssertionError(f"processes {left} outlived SIGKILL in namespace {ns.name}")


@pytest.fixture
def make_netns() -> Iterator[Any]:
    created: list[Netns] = []

    def make(role: str) -> Netns:
        ns = create_netns(role)
        created.append(ns)
        return ns

    yield make
    errors = []
    for ns in reversed(created):
        try:
            remove_netns(ns)
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, "; ".join(errors)


@dataclass
class Lab:
    """A server namespace (floodguard + sink) and a client namespace with four sources each."""

    server: Netns
    client: Netns
    backend: str
    tmp: Path

    def config(self, text: str = "", name: str = "floodguard.toml") -> Path:
        """A config file: the allow list holds the loopback and the third client source."""
        path = self.tmp / name
        allow = (f'allow = ["127.0.0.0/8", "::1/128", "{CLIENTS4[2]}/32", '
                 f'"{CLIENTS6[2]}/128"]\n')
        if "[blacklist]\n" not in text:
            text += "[blacklist]\n"
        text = text.replace("[blacklist]\n", "[blacklist]\n" + allow)
        path.write_text(f'[state]\npath = "{self.tmp / "state.db"}"\n' + text,
                        encoding="utf-8")
        return path

    def apply(self, config: Path, *extra: str, check: bool = True,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.server.floodguard("apply", "-c", str(config), "--backend", self.backend,
                                      *extra, check=check, env=env)

    def start_sink(self, seconds: float = 30, echo: bool = False) -> subprocess.Popen[str]:
        args = [sys.executable, str(SIPNET), "sink", "--seconds", str(seconds)]
        proc = self.server.popen(*args, *(["--echo"] if echo else []))
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", f"sink did not start: {line!r} {proc.stderr.read()}"
        return proc

    @staticmethod
    def stop_sink(proc: subprocess.Popen[str]) -> dict[str, dict[str, int]]:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
        return json.loads(out.strip().splitlines()[-1])

    def send(self, flows: list[tuple[str, float, str]], seconds: float,
             sport: int = 0) -> dict[str, Any]:
        """Send (source, rate, kind) flows to the server address of the source's family."""
        args = [sys.executable, str(SIPNET), "send", "--seconds", str(seconds),
                "--sport", str(sport)]
        for src, rate, kind in flows:
            dst = SERVER6 if ":" in src else SERVER4
            args += ["--flow", f"{src},{dst},{rate},{kind}"]
        return json.loads(self.client.run(*args).stdout)


@pytest.fixture(params=["nft", "legacy"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def lab(make_netns: Any, backend: str, tmp_path: Path) -> Lab:
    server, client = make_netns("srv"), make_netns("cli")
    tag = server.name.split("-")[1]
    veth_s, veth_c = f"fg{tag}s", f"fg{tag}c"
    server.run("ip", "link", "add", veth_s, "type", "veth", "peer", "name", veth_c,
               "netns", client.name)
    server.run("ip", "addr", "add", f"{SERVER4}/24", "dev", veth_s)
    server.run("ip", "-6", "addr", "add", f"{SERVER6}/48", "dev", veth_s, "nodad")
    server.run("ip", "link", "set", veth_s, "up")
    for address in CLIENTS4:
        client.run("ip", "addr", "add", f"{address}/24", "dev", veth_c)
    for address in [*CLIENTS6, NEIGHBOUR6]:
        client.run("ip", "-6", "addr", "add", f"{address}/48", "dev", veth_c, "nodad")
    client.run("ip", "link", "set", veth_c, "up")
    return Lab(server, client, backend, tmp_path)


@pytest.fixture
def glab(make_netns: Any, tmp_path: Path) -> Iterator[Any]:
    """Server and client namespaces for the guard tests (see guardkit.py)."""
    from .guardkit import build

    lab = build(make_netns, tmp_path)
    yield lab
    if lab.guard is not None and lab.guard.poll() is None:
        lab.stop_guard()
    lab.stop_kamailio()
