"""The lab network: five private namespaces joined by routed veth links.

::

    phones ns                      registrar ns                      attackers ns
    10.201.x.y/32 on lo            10.200.0.1/32 on lo (the SIP      10.202.x.y/32 on lo
    (one per phone)                service address; floodguard,      (real attacker hosts)
          |                        guard and registrar run here)     spoofed botnet sources
    10.199.1.2/30 --- veth ---  10.199.1.1/30   10.199.2.1/30 --- veth --- 10.199.2.2/30
                                   routes 10.201/16 -> phones,
                                   10.202/16 and 10.210/15 (botnet) -> attackers,
                                   10.203/16 -> the office's NAT
                                10.199.3.1/30
                                      |
    office ns                 veth    |    nat ns (the office's router)
    192.168.10.x/32 on lo             +--- 10.199.3.2/30, 10.203.0.1/32 on lo (the office's
    (its phones, its other            |    one public address); SNAT of everything from
    hosts: .200 and up)               |    192.168.10/24 to 10.203.0.1
    10.199.4.2/30 --- veth --- 10.199.4.1/30

The office (``nat-office``) is a real NAT: its hosts have private addresses and the router
rewrites their source to the office's one public address, keeping a conntrack mapping per
flow, so the registrar sees every office host as ``10.203.0.1`` with a port of the router's
choosing. Like a carrier's CGNAT doing port-block allocation, the router maps the office's
phones into ports 20000-39999 and its other hosts (the stale phone, the guesser) into
40000-49999: the source address is shared, and only the lab's counters tell them apart by port.

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
LINK_OFFICE = ("10.199.3.1", "10.199.3.2")  # registrar <-> the office's NAT
LINK_LAN = ("10.199.4.1", "10.199.4.2")  # the NAT <-> the office's hosts
OFFICE_IP = "10.203.0.1"  # the office's one public address
OFFICE_NET = "10.203.0.0/16"
OFFICE_LAN = "192.168.10.0/24"
OFFICE_PHONE_BASE = ipaddress.IPv4Address("192.168.10.10")
OFFICE_HOST_BASE = ipaddress.IPv4Address("192.168.10.200")
OFFICE_HOSTS_NET = "192.168.10.192/26"  # the office's other hosts (the stale phone, a guesser)
OFFICE_HOSTS = 8
MAX_OFFICE_PHONES = 180
OFFICE_PHONE_PORTS = (20000, 39999)  # the NAT's port blocks
OFFICE_HOST_PORTS = (40000, 49999)
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


def office_phone_address(index: int) -> str:
    """The private address of office phone ``index`` (0-based), behind the office's NAT."""
    return str(OFFICE_PHONE_BASE + index)


def office_host_address(index: int) -> str:
    """The private address of the office's other host ``index`` (0-based): the stale phone,
    the guesser."""
    return str(OFFICE_HOST_BASE + index)


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
    office_phones: int = 30
    workdir: Path = field(default_factory=lambda: Path("/tmp"))
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    built: bool = False
    processes: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.phones <= MAX_PHONES or not 1 <= self.attackers <= MAX_ATTACKERS:
            raise ValueError("phones and attackers must be between 1 and 60000")
        if not 0 <= self.office_phones <= MAX_OFFICE_PHONES:
            raise ValueError(f"office phones must be between 0 and {MAX_OFFICE_PHONES}")

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
    def nat_ns(self) -> str:
        return f"{PREFIX}-{self.tag}-nat"

    @property
    def office_ns(self) -> str:
        return f"{PREFIX}-{self.tag}-off"

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (self.registrar_ns, self.phones_ns, self.attackers_ns, self.nat_ns,
                self.office_ns)

    @property
    def registrar_ip(self) -> str:
        return REGISTRAR_IP

    def phone_ips(self) -> list[str]:
        return [phone_address(i) for i in range(self.phones)]

    def attacker_ips(self) -> list[str]:
        return [attacker_address(i) for i in range(self.attackers)]

    def office_host_ips(self) -> list[str]:
        return [office_host_address(i) for i in range(OFFICE_HOSTS)]

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
        reg, ph, atk = self.namespaces[:3]
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
        self._build_office()
        # Replies to spoofed sources must leave towards the attackers; loose reverse-path
        # filtering everywhere, and a receive buffer the size a real SIP server would ask for.
        for ns in self.namespaces:
            for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"):
                run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}=0"], check=False)
        self.ping_check()

    def _build_office(self) -> None:
        """The office: its hosts on private addresses, behind a router that SNATs them to the
        office's one public address (port blocks: see the module docstring)."""
        reg, nat, off = self.registrar_ns, self.nat_ns, self.office_ns
        up, lan = f"fgl{self.tag}n", f"fgl{self.tag}o"
        run(["ip", "-n", reg, "link", "add", up + "r", "type", "veth", "peer", "name",
             up + "x", "netns", nat])
        run(["ip", "-n", nat, "link", "add", lan + "r", "type", "veth", "peer", "name",
             lan + "x", "netns", off])
        run(["ip", "-n", reg, "-batch", "-"], stdin="\n".join([
            f"addr add {LINK_OFFICE[0]}/30 dev {up}r", f"link set {up}r up",
            f"route add {OFFICE_NET} via {LINK_OFFICE[1]}"]) + "\n")
        run(["ip", "-n", nat, "-batch", "-"], stdin="\n".join([
            f"addr add {OFFICE_IP}/32 dev lo",
            f"addr add {LINK_OFFICE[1]}/30 dev {up}x", f"link set {up}x up",
            f"addr add {LINK_LAN[0]}/30 dev {lan}r", f"link set {lan}r up",
            f"route add {REGISTRAR_IP}/32 via {LINK_OFFICE[0]}",
            f"route add {OFFICE_LAN} via {LINK_LAN[1]}"]) + "\n")
        hosts = [office_phone_address(i) for i in range(self.office_phones)]
        run(["ip", "-n", off, "-batch", "-"], stdin="\n".join(
            [f"addr add {ip}/32 dev lo" for ip in [*hosts, *self.office_host_ips()]]
            + [f"addr add {LINK_LAN[1]}/30 dev {lan}x", f"link set {lan}x up",
               f"route add {REGISTRAR_IP}/32 via {LINK_LAN[0]} src {office_host_address(0)}"]
        ) + "\n")
        run(["ip", "netns", "exec", nat, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        rules = ["*nat"]
        for proto in ("udp", "tcp"):
            for source, (low, high) in ((OFFICE_HOSTS_NET, OFFICE_HOST_PORTS),
                                        (OFFICE_LAN, OFFICE_PHONE_PORTS)):
                rules.append(f"-A POSTROUTING -o {up}x -s {source} -p {proto} "
                             f"-j SNAT --to-source {OFFICE_IP}:{low}-{high}")
        rules += [f"-A POSTROUTING -o {up}x -s {OFFICE_LAN} -j SNAT --to-source {OFFICE_IP}",
                  "COMMIT"]
        run(["ip", "netns", "exec", nat, "iptables-restore", "--noflush"],
            stdin="\n".join(rules) + "\n")

    def ping_check(self) -> None:
        """Every side has a route to the registrar's service address."""
        for ns, src in ((self.phones_ns, phone_address(0)),
                        (self.attackers_ns, attacker_address(0)),
                        (self.office_ns, office_host_address(0))):
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
