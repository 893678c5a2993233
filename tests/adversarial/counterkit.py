"""The guard's counters as its workers publish them to the state store, for the attack tests
that check what the guard judged: each worker saves the snapshot ``counters-engine-q<queue>``
(its verdicts and its policy engine's stats) about once a second.

The sum over workers is the lab's own reading (floodguard.lab.host.guard_verdicts), so the tests
and ``floodguard lab`` count the same way; this module is the one place the tests name a
worker's snapshot.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from floodguard.lab.host import guard_verdicts
from floodguard.store import Store

# Workers publish about every second: this long after the attack, each has published again.
PUBLISHED_WITHIN = 1.5


def published_verdicts(state_db: Path) -> dict[str, int]:
    """The guard's verdict counters summed over its workers, once each published again."""
    time.sleep(PUBLISHED_WITHIN)
    verdicts = guard_verdicts(state_db)
    assert verdicts is not None, "the guard published no counters"
    return verdicts


def worker_counters(state_db: Path, queue: int) -> dict[str, Any]:
    """One worker's last published counters as they stand ("verdicts", "engine": the policy
    engine's stats); no wait."""
    store = Store(state_db)
    try:
        snap = store.load_snapshot(f"counters-engine-q{queue}")
    finally:
        store.close()
    assert snap is not None, f"worker q{queue} published no counters"
    return snap[1]
