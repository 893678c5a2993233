"""The rule keeper: floodguard's rules, sets and bans put back when something takes them away.

A host firewall that loads or flushes after floodguard does exactly that: nftables.service runs
``flush ruleset`` on start, reload and stop; netfilter-persistent, firewalld and ufw replace whole
tables; an operator types ``nft flush ruleset`` or ``iptables -F``, or destroys the sets. The
supervisor asks the keeper to check every ``CHECK_EVERY`` seconds: a check is what
``floodguard apply`` would do now (idempotent: with everything in place it changes nothing, not
even the counters; ~50 ms of a core on a loaded 2-core host). When it had to create a set again,
it reloads the saved bans and known-good sources from the state store with their remaining time.
It logs ``rules_repaired`` (or ``rules_repair_failed``).

When it repairs: when the rules are meant to be installed. ``floodguard apply`` records that in
the state store (``record``: with which backend), ``floodguard remove`` records their removal;
the keeper follows the last record, whatever the kernel held when the guard started (a guard
started before the rules unit, a flush while the guard was down). Without a record (a store
older than the record) it keeps the rules that were installed when the guard started. So the
guard never installs rules no one applied, and never brings back rules an operator removed.

What it renders: the config file as it is on disk, as ``floodguard apply`` would (an operator or
the Ansible handlers may apply a changed file before the guard reloads it), never the guard's
command line: ``run --monitor`` makes the guard log only, while the kernel's limit rules drop or
only count as the file's ``[guard] mode`` says.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

from floodguard import config as configmod
from floodguard.config import Config
from floodguard.events import EventLog
from floodguard.store import Store, StoreError

CHECK_EVERY = 2.0  # seconds between checks; a flushed ruleset is back within this plus ~1 s
RECORD = "rules"  # the state store's record of the last apply / remove (a snapshot)
SavedEntry = tuple[str, str, float]  # address, set kind ("ban" or "known"), seconds left


def record(cfg: Config, backend: str | None) -> str | None:
    """Record in the state store that ``floodguard apply`` installed the rules with ``backend``
    (None: ``floodguard remove`` took them out). Returns a warning instead of raising: the
    record must never stop the firewall from coming up."""
    try:
        store = Store(cfg.state.path)
        try:
            store.save_snapshot(RECORD, {"applied": backend is not None, "backend": backend})
        finally:
            store.close()
    except (StoreError, sqlite3.Error, OSError) as exc:
        return f"the rule keeper's record was not written: {' '.join(str(exc).split())}"
    return None


def recorded(store: Store) -> tuple[bool, str | None] | None:
    """(applied, backend) from the last ``record``; None when there is none (or it is not one
    this version wrote)."""
    from floodguard.kernel.iptables import BACKENDS

    row = store.load_snapshot(RECORD)
    data: Any = row[1] if row is not None else None
    if not isinstance(data, dict) or not isinstance(data.get("applied"), bool):
        return None
    if not data["applied"]:
        return False, None
    backend = data.get("backend")
    return (True, backend) if backend in BACKENDS else None


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
        """``cfg``: the config file as loaded (never with ``run --monitor`` applied);
        ``store``: the state store, read for the apply record and the saved bans."""
        from floodguard.kernel import firewall

        self.cfg = cfg
        self.events = events
        self.store = store
        started = firewall.installed_backends()
        self.started_with = started[0] if started else None
        self.last = time.monotonic()
        self.seen: tuple[int, int, int] | None = self._signature()
        self.disk: Config | None = None  # the file on disk once it differs from what we run

    def _signature(self) -> tuple[int, int, int] | None:
        if not self.cfg.source:
            return None
        try:
            st = os.stat(self.cfg.source)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reloaded(self, cfg: Config) -> None:
        """The guard runs ``cfg`` now (SIGHUP; as loaded from the file): it is what is on disk."""
        self.cfg = cfg
        self.seen = self._signature()
        self.disk = None

    def _rules_config(self) -> Config:
        signature = self._signature()
        if signature is not None and signature != self.seen:
            self.seen = signature
            try:
                self.disk = configmod.load(self.cfg.source)
            except configmod.ConfigError:
                self.disk = None  # the rules unit refuses an invalid file too: keep ours
        return self.disk if self.disk is not None else self.cfg

    def backend(self) -> str | None:
        """The backend the rules are meant to be installed with; None: not meant to be."""
        try:
            state = recorded(self.store)
        except (StoreError, sqlite3.Error):
            state = None
        if state is None:
            return self.started_with
        return state[1]

    def check(self, rate: int | None, *, now: bool = False) -> None:
        """Re-apply when due, or at once with ``now`` (a new admission rate)."""
        from floodguard.admission_control import effective as with_rate
        from floodguard.kernel import KernelError, firewall

        if not now and time.monotonic() - self.last < CHECK_EVERY:
            return
        self.last = time.monotonic()
        backend = self.backend()
        if backend is None:
            return
        cfg = with_rate(self._rules_config(), rate)
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
