"""Process helpers of the lab's orchestrator: /proc readings (CPU time, memory, children) and
what its child processes say (JSON lines on their stdout or in their logs).

The generators, the phones, the sampler and the guard all speak one JSON object a line; the
orchestrator reads their pipes on threads (``LineReader``) so it never blocks on a child.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from floodguard.errors import FloodguardError
from floodguard.lab.topology import Process

CLK_TCK = os.sysconf("SC_CLK_TCK")


class LabError(FloodguardError, RuntimeError):
    """A lab run could not be carried out (a component did not start, a tool is missing)."""


def json_line(line: str) -> dict[str, Any] | None:
    """The JSON object on one line, or None when the line holds none."""
    with contextlib.suppress(ValueError):
        record = json.loads(line)
        if isinstance(record, dict):
            return record
    return None


# ---------------------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (0 when gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    """The direct children of a process (none when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def comm(pid: int) -> str | None:
    """A process's command name, None when it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


# ---------------------------------------------------------------------------- children's output


class LineReader:
    """Reads a child's stdout lines on a thread so the orchestrator never blocks on it."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self.lines.put(line)
        except (OSError, ValueError):
            pass
        self.lines.put(None)

    def json_until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float
                   ) -> dict[str, Any]:
        """The first JSON line satisfying ``predicate``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise LabError("the process ended before answering")
            record = json_line(line)
            if record is not None and predicate(record):
                return record
        raise LabError(f"no answer within {timeout:.0f} s")

    def drain_json(self) -> list[dict[str, Any]]:
        """Every JSON line read so far and not yet taken."""
        out = []
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return out
            if line is None:
                return out
            record = json_line(line)
            if record is not None:
                out.append(record)


def log_events(log: Path) -> list[dict[str, Any]]:
    """The JSON events (objects with an ``event`` key) a process wrote to its log."""
    if not log.exists():
        return []
    records = (json_line(line) for line in log.read_text(errors="replace").splitlines())
    return [r for r in records if r is not None and "event" in r]


def read_attack_result(proc: Process, log: Path) -> dict[str, Any]:
    """The attack generator's JSON summary, or the tail of a SIPVicious tool's output.

    Stops the process first (it has normally finished by itself) and reads its whole stdout.
    """
    out = ""
    try:
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGINT)
        out, _ = proc.popen.communicate(timeout=10)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        proc.stop(timeout=2, sig=signal.SIGKILL)
    out = out or ""
    for line in reversed(out.splitlines()):
        record = json_line(line)
        if record is not None:
            return record
    text = out + (log.read_text(errors="replace") if log.exists() else "")
    return {"output": text[-4000:], "exit": proc.popen.returncode}
