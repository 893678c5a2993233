"""Run SIPVicious svcrack until it has finished guessing, not until its socket times out.

svcrack 0.3.3 stops guessing when its passwords run out ("no more passwords") or when the server
has been silent for ``--maximumtime`` seconds ("... stopping"); then it keeps reading its socket
until a hard-coded 10 s receive timeout, which sends nothing more. Each call in the tests spent
those 10 s idle. Here svcrack runs with ``-v`` (its info log names both endings), and once it
logs either, it is stopped: by then every guess it sent has been answered (the challenge of the
last answer is what asked for the next password) or the server had gone silent for good.
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time

# what svcrack logs when it will send nothing more
DONE_MARKERS = ("no more passwords", "since we last received a response - stopping")


def run_svcrack(prefix: list[str], args: list[str], timeout: float = 40) -> str:
    """``prefix svcrack -v args`` (prefix e.g. ``ip netns exec NS``) until svcrack says it is
    done, exits, or ``timeout`` seconds pass (then it is killed, as ``timeout(1)`` would);
    returns its output."""
    proc = subprocess.Popen([*prefix, "svcrack", "-v", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    assert proc.stdout is not None
    output = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=min(0.5, max(0.0, deadline - time.monotonic()))):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:  # svcrack exited
                break
            output += chunk
            if any(marker.encode() in output for marker in DONE_MARKERS):
                break
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    proc.stdout.close()
    return output.decode(errors="replace")
