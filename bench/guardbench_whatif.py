"""A what-if guard worker for bench_guard.py's ban-latency diagnostic (not the product).

The shipped ``Guard`` and ``QueueRunner``, wired like ``floodguard run``'s worker (including its
raw-netlink set writer), but with no conntrack flush at all: bench_guard.py runs the same crowd
of guessers against it to show what the (background, TCP-only) flush still costs. Output: the
same JSON event lines as ``floodguard run``.

Usage: guardbench_whatif.py CONFIG
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from floodguard import config as configmod  # noqa: E402
from floodguard.events import EventLog  # noqa: E402
from floodguard.guard import Guard  # noqa: E402
from floodguard.kernel.ipset import SetManager  # noqa: E402
from floodguard.kernel.ipset_netlink import NetlinkSetWriter  # noqa: E402
from floodguard.kernel.nfqueue import QueueRunner  # noqa: E402
from floodguard.kernel.rules import render  # noqa: E402
from floodguard.store import Store  # noqa: E402


def main() -> int:
    cfg = configmod.load(sys.argv[1])
    stop = False

    def on_stop(_sig: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    events = EventLog()
    with SetManager(render(cfg).sets) as manager:
        manager.ensure()
    store = Store(cfg.state.path)
    guard = Guard(cfg, sets=NetlinkSetWriter(render(cfg).sets), store=store, events=events,
                  name=f"engine-q{cfg.queue.num}", flush_conntrack=None)
    restored = guard.restore()
    runner = QueueRunner(cfg.queue.num, guard.handle, fail_open=cfg.queue.fail_open)
    events.emit("guard_started", queue=cfg.queue.num, pid=os.getpid(), restored_bans=restored,
                variant="what-if")
    last_tick = 0.0
    try:
        while not stop:
            runner.poll(0.2)
            now = time.monotonic()
            if now - last_tick >= 0.5:
                last_tick = now
                guard.tick()
    finally:
        runner.drain()
        guard.snapshot()
        runner.close()
        store.close()
        events.emit("guard_stopped", queue=cfg.queue.num, packets=runner.packets)
    return 0


if __name__ == "__main__":
    sys.exit(main())
