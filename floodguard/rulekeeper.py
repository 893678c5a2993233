"""The rule keeper: floodguard's rules, sets and bans put back when something takes them away.

A host firewall that loads or flushes after floodguard does exactly that: nftables.service runs
``flush ruleset`` on start, reload and stop; netfilter-persistent, firewalld and ufw replace whole
tables; an operator types ``nft flush ruleset`` or ``iptables -F``, or destroys the sets. The
supervisor asks the keeper to check every ``CHECK_EVERY`` seconds: a check is what
``floodguard apply`` would do now (idempotent: with everything in place it changes nothing, not
even the counters; ~50 ms of a core on a loaded 2-core host). When it had to create a set again,
it reloads the saved bans and known-good sources from the state store with their remaining time.
It logs ``rules_repaired`` (or ``rules_repair_failed``).

When it repairs, and with what: as the operator last applied. ``floodguard apply`` records in
the state store that the rules are in, with which backend and from which config (``record``:
the file as it was applied, without the fleet's Redis URL); ``floodguard remove`` records that
they are out. The keeper follows the last record, whatever the kernel held when the guard
started (a guard started before the rules unit, a flush while the guard was down), and renders
the recorded config: never a file edited but not applied yet, never the guard's command line
(``run --monitor`` makes the guard log only; the kernel's limit rules drop or only count as the
applied file's ``[guard] mode`` says). Without a record (a store older than the record) it keeps
the rules that were installed when the guard started, rendered from the guard's config file.
So the guard never installs rules no one applied, and never brings back rules an operator
removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from floodguard import allow_list
from floodguard import config as configmod
from floodguard.config import Config, FleetConfig
from floodguard.events import EventLog
from floodguard.store import Store, StoreError

# seconds between checks; a flushed ruleset is back within this plus ~1 s. A check lists the
# rules and sets while the guard may be writing a ban: every 2 s one ban in ~10 took 100-180 ms
# instead of ~1 ms (bench/bench_guard.py --only latency); every 5 s the p99 stays under 2 ms.
CHECK_EVERY = 5.0
RECORD = "rules"  # the state store's record of the last apply / remove (a snapshot)
SavedEntry = tuple[str, str, float]  # address, set kind ("ban" or "known"), seconds left


@dataclass(frozen=True)
class Record:
    """What the last ``floodguard apply`` / ``remove`` left: are the rules meant to be in, with
    which backend and config (None when the record's config no longer loads)."""

    applied: bool
    backend: str | None = None
    cfg: Config | None = None


@contextlib.contextmanager
def exclusive(cfg: Config, *, wait: bool = True) -> Iterator[bool]:
    """One of ``floodguard apply``, ``floodguard remove`` and a keeper's check at a time (a lock
    file beside the state store), so a check never re-installs rules halfway through a remove.
    Yields False when ``wait`` is off and another holds it; True also when no lock file can be
    made (a read-only state directory: nothing to share it with)."""
    try:
        fd = os.open(Path(cfg.state.path).with_name(".rules.lock"),
                     os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:
        yield True
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def record(cfg: Config, backend: str | None) -> str | None:
    """Record in the state store that ``floodguard apply`` installed the rules of the config
    file ``cfg`` was loaded from with ``backend`` (None: ``floodguard remove`` took them out).
    Returns a warning instead of raising: the record must never stop the firewall from coming
    up."""
    if backend is None and not Path(cfg.state.path).exists():
        return None  # no store, no record that could say the rules are in
    try:
        data: dict[str, Any] = {"applied": backend is not None, "backend": backend}
        if backend is not None:
            # as written (``cfg`` may carry the admission controller's budget); the fleet's URL,
            # which may hold a password, plays no part in the rules
            applied = configmod.load(cfg.source) if cfg.source else Config()
            data["config"] = configmod.dumps(dataclasses.replace(applied, fleet=FleetConfig()))
        store = Store(cfg.state.path)
        try:
            store.save_snapshot(RECORD, data)
        finally:
            store.close()
    except (configmod.ConfigError, StoreError, sqlite3.Error, OSError) as exc:
        return f"the rule keeper's record was not written: {' '.join(str(exc).split())}"
    return None


def recorded(store: Store) -> Record | None:
    """The last ``record``; None when there is none (or not one this version can read)."""
    from floodguard.kernel.iptables import BACKENDS

    row = store.load_snapshot(RECORD)
    data: Any = row[1] if row is not None else None
    if not isinstance(data, dict) or not isinstance(data.get("applied"), bool):
        return None
    if not data["applied"]:
        return Record(False)
    backend, text = data.get("backend"), data.get("config")
    if backend not in BACKENDS:
        return None
    try:
        cfg = configmod.loads(text) if isinstance(text, str) else None
    except configmod.ConfigError:
        cfg = None  # written by another version: the guard's config file instead
    return Record(True, backend, cfg)


def saved_entries(store: Store, now: float | None = None) -> list[SavedEntry]:
    """The active bans and known-good sources, to reload into the kernel sets."""
    now = time.time() if now is None else now
    entries = [(row.ip, "ban", row.remaining(now)) for row in store.active_bans(now=now)]
    entries += [(ip, "known", left) for ip, left in store.active_known(now=now)]
    return entries


class RuleKeeper:
    """Re-applies floodguard's rules and sets when someone flushes or deletes them (see the
    module's docstring for when, and with what)."""

    def __init__(self, cfg: Config, events: EventLog, store: Store) -> None:
        """``cfg``: the config file as loaded (never with ``run --monitor`` applied), rendered
        only without a record; ``store``: the state store, with the record and the saved bans."""
        from floodguard.kernel import firewall

        self.cfg = cfg
        self.events = events
        self.store = store
        started = firewall.installed_backends()
        self.started_with = started[0] if started else None
        self.last = time.monotonic()

    def reloaded(self, cfg: Config) -> None:
        """The guard reloaded its config file (SIGHUP)."""
        self.cfg = cfg

    def target(self) -> tuple[str, Config] | None:
        """The backend and config the rules are meant to be installed with; None: not meant
        to be installed."""
        try:
            last = recorded(self.store)
        except (StoreError, sqlite3.Error):
            last = None
        if last is None:
            return (self.started_with, self.cfg) if self.started_with else None
        if not last.applied or last.backend is None:
            return None
        return last.backend, last.cfg or self.cfg

    def check(self, rate: int | None, *, now: bool = False) -> None:
        """Re-apply when due, or at once with ``now`` (a new admission rate)."""
        from floodguard.admission_control import effective as with_rate
        from floodguard.kernel import KernelError, firewall

        if not now and time.monotonic() - self.last < CHECK_EVERY:
            return
        self.last = time.monotonic()
        with exclusive(self.cfg, wait=False) as mine:
            target = self.target() if mine else None  # else: an apply or remove is under way
            if target is None:
                return
            # the run-time allow list (floodguard allow) is in the allow set as apply put it
            backend, cfg = target[0], with_rate(allow_list.effective(target[1], self.store), rate)
            try:
                report = firewall.apply(cfg, backend)
                restored = self._restore(cfg) if report.created_sets else None
            except (KernelError, OSError, StoreError, sqlite3.Error) as exc:
                self.events.emit("rules_repair_failed", backend=backend,
                                 error=" ".join(str(exc).split()))
                return
        if report.changed_tables or report.created_sets:
            # a new admission rate is an update the "admission" event already announced, not a
            # repair of rules someone flushed
            self.events.emit("rules_updated" if now else "rules_repaired",
                             backend=report.backend, tables=report.changed_tables,
                             sets=report.created_sets, restored=restored)

    def _restore(self, cfg: Config) -> int:
        """Sets were missing: reload the saved bans and known-good sources into them."""
        from floodguard.kernel.ipset import SetManager, restore_sets
        from floodguard.kernel.rules import render

        with SetManager(render(cfg).sets) as sets:
            return restore_sets(saved_entries(self.store), sets).loaded
