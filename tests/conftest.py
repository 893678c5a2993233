"""Checks for the whole test run, and fixtures every tier shares.

- The compiled modules under test match their sources: setup.py compiles the guard and the
  policy engine with mypyc; in a checkout installed with ``pip install -e`` the compiled module
  sits beside its source and Python imports it first. A source edited after the build would
  then go untested: the run stops instead, asking for the rebuild that ``make`` does by itself.
- The ``root`` marker: a test module that needs root and the real kernel says so with
  ``pytestmark = pytest.mark.root("tool", ...)``, naming the commands it runs. Such a test fails
  (never skips) when it runs without root or without one of those commands, before any of its
  fixtures builds namespaces. This hook is the only place that checks.
- No process outlives its test's network namespace: the run fails at its end when one did
  (the namespace fixtures in tests/integration/conftest.py kill everything inside first).
- ``kernel_sets``: floodguard's kernel sets in memory (tests/kernelfake.py), for unit tests.
- ``status_sample``: status snapshots as ``floodguard status`` collects them.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.kernelfake import KernelSets


ROOT = Path(__file__).resolve().parent.parent


def stale_builds() -> list[str]:
    """Sources newer than the compiled module beside them (whichever setup.py compiles)."""
    stale = []
    for source in sorted((ROOT / "floodguard").rglob("*.py")):
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            built = source.with_name(source.stem + suffix)
            if built.exists() and built.stat().st_mtime < source.stat().st_mtime:
                stale.append(str(source.relative_to(ROOT)))
    return stale


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = stale_builds()
    if stale:
        pytest.exit(f"compiled modules are older than their sources ({', '.join(stale)}): "
                    "rebuild with `make deps` (or `.venv/bin/pip install -e .`)", returncode=4)


def leaked_processes(inodes: set[int]) -> list[int]:
    """Processes inside one of the network namespaces ``inodes`` that no longer has a name
    under /run/netns (a namespace still named belongs to a test running elsewhere)."""
    named = set()
    for path in Path("/run/netns").glob("*") if Path("/run/netns").is_dir() else ():
        with contextlib.suppress(OSError):
            named.add(path.stat().st_ino)
    leaked = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(entry / "ns" / "net").st_ino in inodes - named:
                    leaked.append(int(entry.name))
    return leaked


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run when a process outlived the test namespace it ran in (then kill it)."""
    netns = sys.modules.get("tests.integration.conftest")
    leaked = leaked_processes(netns.NETNS_INODES) if netns is not None else []
    if not leaked:
        return
    details = []
    for pid in leaked:
        with contextlib.suppress(OSError):
            details.append(f"{pid} {Path(f'/proc/{pid}/cmdline').read_bytes()!r}")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    sys.stderr.write("\nprocesses outlived their test namespace (now killed):\n  "
                     + "\n  ".join(details) + "\n")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


# ---------------------------------------------------------------- tests that need root


def missing_tools(tools: list[str]) -> list[str]:
    """The commands of ``tools`` found neither on PATH nor in /usr/sbin."""
    return [tool for tool in tools
            if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``root``: fail loudly, never skip, without root or a tool they name."""
    marks = list(item.iter_markers("root"))
    if not marks:
        return
    if os.geteuid() != 0:
        pytest.fail("this test needs root and a real kernel (network namespaces, iptables, "
                    "ipset): run it as root, e.g. `sudo make test`", pytrace=False)
    tools = list(dict.fromkeys(str(tool) for mark in marks for tool in mark.args))
    missing = missing_tools(tools)
    if missing:
        pytest.fail(f"missing for this test: {', '.join(missing)}: run `sudo make deps`",
                    pytrace=False)


# ---------------------------------------------------------------- shared fixtures


@pytest.fixture
def kernel_sets() -> KernelSets:
    """floodguard's kernel sets (default configuration) in memory, like pyroute2's ipmock."""
    from tests.kernelfake import KernelSets

    return KernelSets()


@pytest.fixture
def status_sample() -> Callable[..., dict[str, Any]]:
    """Builds status snapshots: one worker, one suspension, a ban set 900/1000 full, a REGISTER
    hashlimit table 95/100 full."""

    def sample(time: float = 100.0, reg_drops: int = 10, queued: int = 5,
               ok: int = 3) -> dict[str, Any]:
        return {
            "time": time, "mode": "enforce",
            "guard": {"ok": True, "workers": [{"name": "engine-q0", "alive": True, "age": 0.5,
                                               "set_errors": 0, "tables": {"sources": 4}}],
                      "verdicts": {"pass:ok": ok, "drop:rate:sip": 1},
                      "top_sources": [{"ip": "192.0.2.9", "dropped": 7}]},
            "bans": [{"ip": "192.0.2.9", "kind": "suspend", "remaining": 170.0,
                      "reason": "consecutive-failures", "aor": "1001@x"}],
            "bans_by_kind": {"suspend": 1}, "bans_by_reason": {"consecutive-failures": 1},
            "top_aors": [{"aor": "1001@x", "bans": 1}],
            "registrations": {"bindings": 3, "online": 2, "offline": 1},
            "kernel": {"ok": True, "installed": True, "queued": queued,
                       "drops": {"register-rate": reg_drops},
                       "sets": [{"name": "floodguard-ban", "entries": 900, "maxelem": 1000}],
                       "hashlimits": [{"name": "fg-reg-0123abcd", "family": 4,
                                       "purpose": "REGISTER per source", "entries": 95,
                                       "capacity": 100},
                                      {"name": "fg-bud-4567cdef", "family": 4,
                                       "purpose": "unknown sources in all (admission budget)",
                                       "entries": 1, "capacity": None}],
                       "conntrack": {"entries": 12, "capacity": 262144},
                       "backend": "nft"},
        }

    return sample
