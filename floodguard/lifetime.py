"""Process lifetime: a forked worker stops when the supervisor that started it dies.

The guard's queue workers and the registrar's workers are forked by a supervisor. Killed
outright (``kill -9``, the OOM killer), a supervisor cannot stop them, and orphans keep what they
hold — a queue number, a UDP port — so a restarted supervisor could not start its own. Instead
the kernel sends each worker SIGTERM when its supervisor dies (``PR_SET_PDEATHSIG``), and a
worker stops on SIGTERM as it always does, cleanly. (The kernel watches the thread that forked:
both supervisors fork from their main thread.)
"""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - every Linux libc has prctl
    _LIBC = None


def stop_with(supervisor: int) -> None:
    """Call first thing in a forked worker; ``supervisor`` is the pid that forked it, read
    before the fork. A SIGTERM before the worker installs its own handler ends it at once
    (nothing to save yet), whatever handler it inherited."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != supervisor:  # it died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)
