"""The bench_guard.py lab: a server and a client namespace on a veth pair, the processes
started in them with their output, the guard started there, and the figures read from /proc
(CPU time, RSS, the NFQUEUE counters). Everything it creates goes in ``Lab.close``."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guardbench_traffic import CLIENT, SERVER

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
FLOODGUARD = str(Path(sys.executable).with_name("floodguard"))
QUEUE = 0
CONSUMER_CPU = "0"
LOAD_CPU = "1"
TARGETS = {
    "throughput_ratio": ">= 0.7",
    "ban_latency_p99_ms": "< 10",
    "memory_rss_mb": "< 256",
}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of fewer than 100 values is the maximum)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]



# ---------------------------------------------------------------- processes and namespaces


@dataclass
class Proc:
    """A process we started, its output lines (stdout) with arrival times."""

    name: str
    popen: subprocess.Popen[str]
    errfile: Path
    lines: list[tuple[float, str]] = field(default_factory=list)
    reader: threading.Thread | None = None

    def start_reader(self) -> None:
        def pump() -> None:
            assert self.popen.stdout is not None
            for line in self.popen.stdout:
                self.lines.append((time.time(), line.rstrip("\n")))

        self.reader = threading.Thread(target=pump, daemon=True)
        self.reader.start()

    def wait_line(self, predicate: Callable[[str], bool], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            while seen < len(self.lines):
                line = self.lines[seen][1]
                seen += 1
                if predicate(line):
                    return line
            if self.popen.poll() is not None and seen >= len(self.lines):
                time.sleep(0.1)  # let the reader drain
                if seen >= len(self.lines):
                    break
            time.sleep(0.01)
        raise RuntimeError(f"{self.name}: expected output did not come: "
                           f"{[t for _, t in self.lines[-5:]]} {self.stderr()[-2000:]}")

    def stderr(self) -> str:
        try:
            return self.errfile.read_text(errors="replace")
        except OSError:
            return ""

    def events(self) -> list[dict[str, Any]]:
        out = []
        for _, line in list(self.lines):
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        if self.reader is not None:
            self.reader.join(5)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in kB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


class Lab:
    """A server and a client namespace joined by a veth pair; everything goes in close()."""

    def __init__(self, tmp: Path, extra_client_addresses: Sequence[str] = ()) -> None:
        tag = secrets.token_hex(3)
        self.tmp = tmp
        self.srv = f"fgbg-{tag}-srv"
        self.cli = f"fgbg-{tag}-cli"
        self.procs: list[Proc] = []
        self._created: list[str] = []
        try:
            for ns in (self.srv, self.cli):
                self._sh("ip", "netns", "add", ns)
                self._created.append(ns)
                self.run(ns, "ip", "link", "set", "lo", "up")
            veth_s, veth_c = f"fgbg{tag}s", f"fgbg{tag}c"
            self.veth_srv = veth_s
            self.run(self.srv, "ip", "link", "add", veth_s, "type", "veth", "peer", "name",
                     veth_c, "netns", self.cli)
            self.run(self.srv, "ip", "addr", "add", f"{SERVER}/16", "dev", veth_s)
            self.run(self.srv, "ip", "link", "set", veth_s, "up")
            batch = "".join(f"addr add {a}/16 dev {veth_c}\n"
                            for a in [CLIENT, *extra_client_addresses])
            self.run(self.cli, "ip", "-batch", "-", stdin=batch)
            self.run(self.cli, "ip", "link", "set", veth_c, "up")
            for ns, dev in ((self.srv, veth_s), (self.cli, veth_c)):
                self.run(ns, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0",
                         f"net.ipv4.conf.{dev}.rp_filter=0")
            # spoofed sources (10.x outside the link) are answered through the client's MAC
            self.run(self.srv, "ip", "route", "add", "10.0.0.0/8", "via", CLIENT)
            self.run(self.srv, "ping", "-c", "1", "-W", "2", CLIENT, check=False)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _sh(*argv: str, check: bool = True, stdin: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): "
                               f"{result.stdout}{result.stderr}")
        return result

    def run(self, ns: str, *argv: str, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return self._sh("ip", "netns", "exec", ns, *argv, check=check, stdin=stdin)

    def spawn(self, name: str, ns: str, argv: list[str], cpu: str | None,
              env: dict[str, str] | None = None) -> Proc:
        pin = ["taskset", "-c", cpu] if cpu is not None else []
        errfile = self.tmp / f"{name}-{len(self.procs)}.err"
        with open(errfile, "w") as err:
            popen = subprocess.Popen([*pin, "ip", "netns", "exec", ns, *argv],
                                     stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        proc = Proc(name, popen, errfile)
        self.procs.append(proc)
        proc.start_reader()
        return proc

    def queue_counters(self) -> dict[str, int]:
        text = self.run(self.srv, "cat", "/proc/net/netfilter/nfnetlink_queue").stdout
        for line in text.splitlines():
            f = line.split()
            if int(f[0]) == QUEUE:
                return {"waiting": int(f[2]), "queue_dropped": int(f[5]),
                        "user_dropped": int(f[6]), "id_sequence": int(f[7])}
        return {"waiting": 0, "queue_dropped": 0, "user_dropped": 0, "id_sequence": 0}

    def close(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop(timeout=10)
        for ns in self._created:
            # anything still running inside our namespaces was started by us (forked children)
            pids = self._sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            self._sh("ip", "netns", "del", ns, check=False)
        self._created.clear()


def start_guard(lab: Lab, config: Path, cpu: str | None = CONSUMER_CPU,
                env: dict[str, str] | None = None, whatif: bool = False) -> tuple[Proc, int]:
    """``floodguard run`` (pinned to the consumer CPU by default), or the what-if worker;
    returns it and the worker's pid."""
    argv = ([PYTHON, str(BENCH / "guardbench_whatif.py"), str(config)] if whatif
            else [FLOODGUARD, "run", "-c", str(config)])
    guard = lab.spawn("guard", lab.srv, argv, cpu, env)
    started = guard.wait_line(lambda line: '"guard_started"' in line, 30)
    return guard, int(json.loads(started)["pid"])
