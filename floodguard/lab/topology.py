"""The lab network: three private namespaces joined by two routed veth links.

::

    phones ns                      registrar ns                      attackers ns
    10.201.x.y/32 on lo            10.200.0.1/32 on lo (the SIP      10.202.x.y/32 on lo
    (one per phone)                service address; floodguard,      (real attacker hosts)
          |                        guard and registrar run here)     spoofed botnet sources
    10.199.1.2/30 --- veth ---  10.199.1.1/30   10.199.2.1/30 --- veth --- 10.199.2.2/30
                                   routes 10.201/16 -> phones,
                                   10.202/16 and 10.210/15 (botnet) -> attackers

Routed links rather than a bridge: every host address sits on the namespace's loopback, so the
registrar has one neighbour per link (no ARP for hundreds of phones or thousands of spoofed
sources), and the registrar's answers to spoofed botnet sources go back towards the attackers'
namespace, where they die, as they would on the Internet. Addresses exist only inside these
namespaces. ``Topology`` is a context manager: leaving it (normally, on an exception, or on
Ctrl-C turned into ``KeyboardInterrupt``) kills every process it started and deletes the
namespaces, which deletes the veth links with them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from floodguard.errors import FloodguardError

PREFIX = "fglab"
REGISTRAR_IP = "10.200.0.1"
PHONE_BASE = ipaddress.IPv4Address("10.201.0.10")
ATTACKER_BASE = ipaddress.IPv4Address("10.202.0.10")
PHONE_NET = "10.201.0.0/16"
ATTACKER_NET = "10.202.0.0/16"
BOTNET_NET = "10.210.0.0/15"
LINK_PHONES = ("10.199.1.1", "10.199.1.2")
LINK_ATTACKERS = ("10.199.2.1", "10.199.2.2")
MAX_PHONES = 60000
# Every process the lab starts carries this variable (value: the lab's tag), so what is left of
# a lab can be found by anyone, e.g. the tests checking that nothing is.
ENV_MARK = "FLOODGUARD_LAB"
MAX_ATTACKERS = 60000


class TopologyError(FloodguardError, RuntimeError):
    """A command building or using the lab network failed."""


def run(argv: Sequence[str], *, check: bool = True, stdin: str | None = None,
        timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output; raise TopologyError when it fails and check is set."""
    try:
        result = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                                timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TopologyError(f"{' '.join(argv)}: {exc}") from None
    if check and result.returncode != 0:
        raise TopologyError(f"{' '.join(argv)} failed ({result.returncode}): "
                            f"{(result.stderr or result.stdout).strip()}")
    return result


def phone_address(index: int) -> str:
    """The address of phone ``index`` (0-based)."""
    return str(PHONE_BASE + index)


def attacker_address(index: int) -> str:
    """The address of real attacker host ``index`` (0-based)."""
    return str(ATTACKER_BASE + index)


def botnet_addresses(count: int) -> list[str]:
    """``count`` distinct spoofed source addresses from the botnet range (at most 131,072)."""
    net = ipaddress.IPv4Network(BOTNET_NET)
    if count > net.num_addresses - 2:
        raise ValueError(f"the botnet range holds at most {net.num_addresses - 2} sources")
    first = int(net.network_address) + 1
    return [str(ipaddress.IPv4Address(first + i)) for i in range(count)]


def lab_processes(tag: str | None = None) -> list[int]:
    """Processes started by a lab (by the one with ``tag``, or by any)."""
    out = []
    mark = ENV_MARK.encode() + b"="
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item.startswith(mark) and (tag is None or item[len(mark):] == tag.encode()):
                out.append(int(entry.name))
                break
    return out


def lab_namespaces() -> list[str]:
    """Namespaces on this host whose names say the lab made them (``fglab-*``)."""
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.strip() and line.split()[0].startswith(PREFIX + "-")]


@dataclass
class Process:
    """A process the lab started inside one of its namespaces."""

    name: str
    popen: subprocess.Popen[Any]
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal it, wait, kill it if it does not go; returns the exit code."""
        proc = self.popen
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return proc.returncode


@dataclass
class Topology:
    """The registrar, phones and attackers namespaces; see the module docstring."""

    phones: int = 60
    attackers: int = 16
    workdir: Path = field(default_factory=lambda: Path("/tmp"))
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    built: bool = False
    processes: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.phones <= MAX_PHONES or not 1 <= self.attackers <= MAX_ATTACKERS:
            raise ValueError("phones and attackers must be between 1 and 60000")

    # ------------------------------------------------------------------ names

    @property
    def registrar_ns(self) -> str:
        return f"{PREFIX}-{self.tag}-reg"

    @property
    def phones_ns(self) -> str:
        return f"{PREFIX}-{self.tag}-ph"

    @property
    def attackers_ns(self) -> str:
        return f"{PREFIX}-{self.tag}-atk"

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return (self.registrar_ns, self.phones_ns, self.attackers_ns)

    @property
    def registrar_ip(self) -> str:
        return REGISTRAR_IP

    def phone_ips(self) -> list[str]:
        return [phone_address(i) for i in range(self.phones)]

    def attacker_ips(self) -> list[str]:
        return [attacker_address(i) for i in range(self.attackers)]

    @property
    def default_attacker_ip(self) -> str:
        """The source address of attacker tools that do not bind (svcrack, svmap, svwar)."""
        return attacker_address(self.attackers - 1)

    # ------------------------------------------------------------------ building

    def build(self) -> Topology:
        """Create the namespaces, links, addresses and routes."""
        try:
            self._build()
        except BaseException:
            self.teardown()
            raise
        self.built = True
        return self

    def _build(self) -> None:
        reg, ph, atk = self.namespaces
        for ns in self.namespaces:
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        veth_ph, veth_atk = f"fgl{self.tag}p", f"fgl{self.tag}a"
        run(["ip", "-n", reg, "link", "add", veth_ph + "r", "type", "veth", "peer", "name",
             veth_ph + "x", "netns", ph])
        run(["ip", "-n", reg, "link", "add", veth_atk + "r", "type", "veth", "peer", "name",
             veth_atk + "x", "netns", atk])
        # The registrar: its service address on lo, one /30 per link, routes to each side.
        batch = [
            f"addr add {REGISTRAR_IP}/32 dev lo",
            f"addr add {LINK_PHONES[0]}/30 dev {veth_ph}r",
            f"addr add {LINK_ATTACKERS[0]}/30 dev {veth_atk}r",
            f"link set {veth_ph}r up",
            f"link set {veth_atk}r up",
            f"route add {PHONE_NET} via {LINK_PHONES[1]}",
            f"route add {ATTACKER_NET} via {LINK_ATTACKERS[1]}",
            f"route add {BOTNET_NET} via {LINK_ATTACKERS[1]}",
        ]
        run(["ip", "-n", reg, "-batch", "-"], stdin="\n".join(batch) + "\n")
        batch = [f"addr add {LINK_PHONES[1]}/30 dev {veth_ph}x", f"link set {veth_ph}x up",
                 f"route add {REGISTRAR_IP}/32 via {LINK_PHONES[0]} src {phone_address(0)}"]
        addrs = [f"addr add {ip}/32 dev lo" for ip in self.phone_ips()]
        run(["ip", "-n", ph, "-batch", "-"], stdin="\n".join(addrs + batch) + "\n")
        batch = [f"addr add {LINK_ATTACKERS[1]}/30 dev {veth_atk}x", f"link set {veth_atk}x up",
                 f"route add {REGISTRAR_IP}/32 via {LINK_ATTACKERS[0]} "
                 f"src {self.default_attacker_ip}"]
        addrs = [f"addr add {ip}/32 dev lo" for ip in self.attacker_ips()]
        run(["ip", "-n", atk, "-batch", "-"], stdin="\n".join(addrs + batch) + "\n")
        # Replies to spoofed sources must leave towards the attackers; loose reverse-path
        # filtering everywhere, and a receive buffer the size a real SIP server would ask for.
        for ns in self.namespaces:
            for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"):
                run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}=0"], check=False)
        self.ping_check()

    def ping_check(self) -> None:
        """Both sides have a route to the registrar's service address."""
        for ns, src in ((self.phones_ns, phone_address(0)),
                        (self.attackers_ns, attacker_address(0))):
            result = run(["ip", "-n", ns, "route", "get", REGISTRAR_IP, "from", src],
                         check=False)
            if result.returncode != 0:
                raise TopologyError(f"{ns}: no route to {REGISTRAR_IP} from {src}: "
                                    f"{result.stderr.strip()}")

    # ------------------------------------------------------------------ running things

    @staticmethod
    def wrap(ns: str, argv: Sequence[str], *, cpus: str | None = None) -> list[str]:
        """argv run inside namespace ``ns`` (and pinned to ``cpus`` when given)."""
        prefix = ["ip", "netns", "exec", ns]
        if cpus is not None:
            prefix += ["taskset", "-c", cpus]
        return [*prefix, *argv]

    def run_in(self, ns: str, argv: Sequence[str], *, check: bool = True,
               stdin: str | None = None, timeout: float = 60.0
               ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion inside namespace ``ns``."""
        return run(self.wrap(ns, argv), check=check, stdin=stdin, timeout=timeout)

    def start(self, name: str, ns: str, argv: Sequence[str], *, cpus: str | None = None,
              log: Path | None = None, pipe_stdin: bool = False, pipe_stdout: bool = False,
              env: dict[str, str] | None = None) -> Process:
        """Start a long-running process inside ``ns``; it is stopped at teardown at the latest.

        Its output goes to ``log`` (stdout and stderr together) unless stdout is piped, in
        which case stderr goes to the log.
        """
        logfile = open(log, "ab") if log is not None else None  # noqa: SIM115 — closed below
        try:
            sink: IO[Any] | int = logfile if logfile is not None else subprocess.DEVNULL
            if pipe_stdout:
                out, err = subprocess.PIPE, sink
            else:
                out, err = sink, (subprocess.STDOUT if logfile is not None else sink)
            text = pipe_stdin or pipe_stdout
            popen = subprocess.Popen(
                self.wrap(ns, argv, cpus=cpus), stdout=out, stderr=err,
                stdin=subprocess.PIPE if pipe_stdin else subprocess.DEVNULL,
                text=text, bufsize=1 if text else -1,
                env={**os.environ, **(env or {}), ENV_MARK: self.tag},
                start_new_session=True,
            )
        finally:
            if logfile is not None:
                logfile.close()
        proc = Process(name, popen, log)
        self.processes.append(proc)
        return proc

    def pids_in(self, ns: str) -> list[int]:
        """Every process living in namespace ``ns`` (all of them are the lab's own)."""
        out = run(["ip", "netns", "pids", ns], check=False).stdout
        return [int(p) for p in out.split() if p.isdigit()]

    # ------------------------------------------------------------------ teardown

    def teardown(self) -> None:
        """Stop every process the lab started and delete its namespaces. Never raises; a
        second Ctrl-C while it runs is ignored, so the cleanup is never cut short."""
        with _signals_ignored():
            self._teardown()

    def _teardown(self) -> None:
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.stop(timeout=5)
        self.processes.clear()
        existing = set(lab_namespaces())
        for ns in self.namespaces:
            if ns not in existing:
                continue
            # Anything still inside (a tool's child that outlived its parent) was started by
            # the lab in its own namespace: end it by pid, then the namespace can go.
            for sig in (signal.SIGTERM, signal.SIGKILL):
                pids = self.pids_in(ns)
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, sig)
                deadline = time.monotonic() + 3
                while self.pids_in(ns) and time.monotonic() < deadline:
                    time.sleep(0.05)
            run(["ip", "netns", "del", ns], check=False)
        self.built = False

    def __enter__(self) -> Topology:
        return self.build()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.teardown()


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    """Turn SIGTERM (and SIGINT, which Python already does) into KeyboardInterrupt meanwhile,
    so ``with Topology()`` blocks clean up when the lab is stopped."""

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
