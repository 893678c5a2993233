"""Pacing shared by the lab's attack generators (``attacks.py``, ``botnet.py``): ``Pacer`` and
the stop flag that SIGINT/SIGTERM set in a generator process."""

from __future__ import annotations

import time

# Set by SIGINT/SIGTERM: every generator stops at its next step and still reports.
STOP: list[bool] = [False]


class Pacer:
    """Paces a loop to ``rate`` items per second (rate 0: as fast as possible).

    Fast floods are paced by spinning in batches of at most ``BATCH`` packets rather than by
    sleeping: a flood that arrives in bursts with quiet gaps between them lets a registrar's
    socket buffer drain in the gaps, which a real botnet (thousands of independent senders)
    never does.
    """

    BATCH = 16
    SPIN_ABOVE = 2000.0  # packets/s
    MAX_BEHIND = 0.005  # s: after being descheduled, skip what is older instead of bursting

    def __init__(self, rate: float, duration: float) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.end = self.start + duration
        self.done = 0
        self.skipped = 0

    def due(self) -> int:
        """How many items are due now (0 when ahead of schedule); -1 when time is up."""
        now = time.monotonic()
        if now >= self.end or STOP[0]:
            return -1
        if not self.rate:
            return self.BATCH
        due = int((now - self.start) * self.rate) - self.done
        behind = int(self.rate * self.MAX_BEHIND)
        if self.rate >= self.SPIN_ABOVE and due > behind + self.BATCH:
            self.skipped += due - behind
            self.done += due - behind
            due = behind
        if due <= 0:
            if self.rate < self.SPIN_ABOVE:
                ahead = (self.done + 1) / self.rate - (now - self.start)
                time.sleep(min(0.002, max(0.0, ahead)))
            return 0
        return min(due, self.BATCH)
