"""The fleet link: one thread in the supervisor (see ``daemon.supervise``) connecting this node's
store and kernel sets to Redis (``FleetLink``).

* **Outbound.** Every ~50 ms it reads the store journal (every local ban, unban and known-good
  mark, whoever made it) and merges the changes into Redis with one Lua script call per batch,
  which also publishes the changes it accepted. The journal position is persisted.
* **Inbound.** A pub/sub subscriber applies the other nodes' changes (``apply.Applier``).
* **Start.** ``FleetLink.load`` pulls the current fleet bans before the guard workers start.
* **Outage.** The link retries with exponential backoff and on reconnect re-syncs both ways.
* **Housekeeping.** Heartbeats in ``<p>:nodes``; one node at a time sweeps expired entries
  (sweep.py); the link's state and counters (link_counts.py) are saved as the ``fleet`` snapshot
  for ``floodguard status`` and the metrics.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from floodguard.config import Config
from floodguard.enforce import Forget
from floodguard.events import EventLog
from floodguard.fleet import endpoints, wire
from floodguard.fleet.apply import (
    SQL_CHUNK,
    Applier,
    WriterFactory,
    count_set,
    count_store_bans,
    netlink_writer,
)
from floodguard.fleet.client import SOCKET_TIMEOUT, connect, errors, node_name, redact
from floodguard.fleet.link_counts import LinkCounts
from floodguard.fleet.sweep import Sweeper
from floodguard.store import Store

POLL_SECONDS = 0.05  # journal poll and pub/sub wait per step
PUSH_BATCH = 2000  # changes per Lua call
PUSH_BUDGET = 0.25  # seconds of pushing per step before inbound messages get a turn
MAX_DRAIN = 64  # pub/sub messages applied per step
HEARTBEAT_EVERY = 2.0
SNAPSHOT_EVERY = 1.0
NODE_ALIVE = 3 * HEARTBEAT_EVERY
BACKOFF_FIRST = 0.25
BACKOFF_MAX = 5.0
LOAD_TIMEOUT = 5.0
EVENT_IPS = 20  # addresses listed in one fleet_applied event

SNAPSHOT = "fleet"
CURSOR_SNAPSHOT = "fleet-cursor"


class FleetLink:
    """The supervisor's connection to the fleet: ``load()`` once before the workers start,
    then ``start()`` a thread that pushes, applies, heartbeats and reconnects; ``stop()``."""

    def __init__(self, cfg: Config, events: EventLog, store_factory: Callable[[], Store],
                 sets_factory: Callable[[], Any], *,
                 client_factory: Callable[[], Any] | None = None,
                 writer_factory: WriterFactory = netlink_writer,
                 forget: Forget | None = None) -> None:
        """``forget`` cuts banned sources' connections (``kernel.conntrack.forget_connections``)."""
        self.cfg = cfg
        self.events = events
        self.forget = forget
        self.store_factory = store_factory
        self.sets_factory = sets_factory
        self.node = node_name(cfg)
        self.keys = wire.Keys(cfg.fleet.channel)
        self.url = cfg.fleet.redis_url
        self.instance = secrets.token_hex(6)
        self.writer_factory = writer_factory  # how the appliers write to the kernel sets
        self.client_factory = client_factory or (lambda: connect(
            self.url, timeout=SOCKET_TIMEOUT, name=f"floodguard:{self.node}"))
        self.client: Any = None
        self.pubsub: Any = None
        self._merge: Any = None
        self.up = False
        self.up_since: float | None = None
        self.down_since: float | None = None
        self.last_error: str | None = None
        self.reconnects = 0
        self.backoff = BACKOFF_FIRST
        self.retry_at = 0.0
        self.cursor: int | None = None
        self.stats = LinkCounts(events)
        self.counts = self.stats.counts
        self.sweeper = Sweeper(self.keys, self.node)
        self.nodes: dict[str, dict[str, Any]] = {}
        self.redis_counts: dict[str, Any] = {}
        self.local_counts: dict[str, int | None] = {"set": None, "store": None}
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        self._need_pull = True
        self._need_push = True
        self._conflict_reported = False
        self._last_heartbeat = 0.0
        self._last_snapshot = 0.0
        self._applier: Applier | None = None

    # ------------------------------------------------------------ lifecycle

    def load(self, timeout: float = LOAD_TIMEOUT) -> bool:
        """Connect and apply the fleet's current bans (this thread; before the workers start).

        Gives up after ``timeout`` seconds (the link's thread finishes the job later) or at once
        when Redis cannot be reached; True when every fleet ban was loaded.
        """
        started = time.monotonic()
        store, sets = self.store_factory(), self.sets_factory()
        applier: Applier | None = None
        try:
            try:
                if hasattr(sets, "ensure"):
                    sets.ensure()
                self._load_cursor(store)
                applier = Applier(self.cfg, store, sets, writer_factory=self.writer_factory,
                                  events=self.events, forget=self.forget)
                self._connect()
                pulled = self._pull(applier, deadline=started + timeout)
            except Exception as exc:  # noqa: BLE001 — the guard starts whatever the fleet does
                self._down(exc)
                return False
            self._need_pull = pulled is None
            totals = pulled or {}
            self.events.emit("fleet_loaded", node=self.node, url=redact(self.url),
                             complete=pulled is not None, bans=totals.get("bans", 0),
                             known=totals.get("known", 0), allowed=totals.get("allowed", 0),
                             seconds=round(time.monotonic() - started, 3))
            return pulled is not None
        finally:
            if applier is not None:
                applier.close()
            store.close()
            with contextlib.suppress(Exception):
                sets.close()

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="floodguard-fleet", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join(timeout)

    def _run(self) -> None:
        store, sets = self.store_factory(), self.sets_factory()
        try:
            self._load_cursor(store)
            self._applier = Applier(self.cfg, store, sets,
                                    writer_factory=self.writer_factory, events=self.events,
                                    forget=self.forget)
            while not self.stopped.is_set():
                try:
                    self.step(store, sets)
                except Exception as exc:  # noqa: BLE001 — the fleet link never takes the guard down
                    self.events.emit("fleet_error", error=" ".join(str(exc).split()) or
                                     type(exc).__name__)
                    self._down(exc)
                    self.stopped.wait(1.0)
            self._finish(store, sets)
        finally:
            if self._applier is not None:
                self._applier.close()
            store.close()
            with contextlib.suppress(Exception):
                sets.close()
            self._close()

    def _finish(self, store: Store, sets: Any) -> None:
        """Last push (bounded by the socket timeout) and a goodbye heartbeat."""
        if self.up:
            try:
                self._push_journal(store, budget=1.0)
                self._heartbeat(store, sets, stopped=True)
            except errors():
                pass
        self.up = False
        self._snapshot(store, force=True)

    # ------------------------------------------------------------ one step

    def step(self, store: Store, sets: Any) -> None:
        """One round: reconnect when due, else apply inbound and push outbound; housekeeping."""
        applier = self._applier
        if applier is None or applier.store is not store:
            if applier is not None:
                applier.close()
            applier = self._applier = Applier(self.cfg, store, sets,
                                              writer_factory=self.writer_factory,
                                              events=self.events, forget=self.forget)
        if self.cfg is not applier.cfg:
            self._reload(applier)
        if self.cursor is None:
            self._load_cursor(store)
        now = time.monotonic()
        if not self.up:
            if now >= self.retry_at:
                try:
                    if self.client is None:
                        self._connect()
                    self._resync(store, applier)
                except errors() as exc:
                    self._down(exc)
            else:
                self.stopped.wait(min(POLL_SECONDS, self.retry_at - now))
        else:
            try:
                self._drain(applier)
                self._push_journal(store)
                if time.monotonic() - self._last_heartbeat >= HEARTBEAT_EVERY:
                    self._heartbeat(store, sets)
                self.sweeper.step(self.client)
            except errors() as exc:
                self._down(exc)
        self._snapshot(store)

    def _reload(self, applier: Applier) -> None:
        was_monitor = applier.cfg.guard.mode == "monitor"
        if applier.cfg.fleet != self.cfg.fleet:
            self.events.emit("fleet_reload", note="[fleet] changes take effect at restart")
        lifted = applier.reload(self.cfg)
        if lifted:
            self.events.emit("fleet_unban_allowed", ips=lifted[:EVENT_IPS], count=len(lifted))
        if was_monitor and self.cfg.guard.mode != "monitor":
            self._need_pull = True  # bans were only counted in monitor mode: fetch them now
            if self.up:
                self.up = False
                self.retry_at = 0.0

    # ------------------------------------------------------------ connection

    def _connect(self) -> None:
        self._close()
        client = self.client_factory()
        client.ping()
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.keys.channel)
        self.client, self.pubsub = client, pubsub
        self._merge = client.register_script(wire.MERGE_LUA)
        self.sweeper.attach(client)

    def _close(self) -> None:
        for thing in (self.pubsub, self.client):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.close()
        self.client = self.pubsub = None

    def _down(self, exc: BaseException) -> None:
        error = " ".join(str(exc).split()) or type(exc).__name__
        if self.up or self.last_error is None:
            self.down_since = self.down_since or time.time()
            self.events.emit("fleet_down", node=self.node, url=redact(self.url), error=error)
        self.last_error = error
        self.up = False
        self._last_snapshot = 0.0  # status shows the change at once
        self._need_pull = True
        self._need_push = True
        self.sweeper.reset()
        self._close()
        delay = self.backoff * (0.8 + 0.4 * secrets.randbelow(1000) / 1000)
        self.retry_at = time.monotonic() + delay
        self.backoff = min(BACKOFF_MAX, self.backoff * 2)

    def _resync(self, store: Store, applier: Applier) -> None:
        """After (re)connecting: push the journal backlog and whatever Redis lacks, pull what this
        node lacks. Subscribed first, so nothing published meanwhile is missed."""
        started = time.monotonic()
        was_down = self.down_since
        pushed = self._push_journal(store, budget=None)
        stated = self._push_state(store) if self._need_push else 0
        pulled = self._pull(applier) if self._need_pull else None
        self._need_push = False
        self._need_pull = False
        self.up = True
        self.up_since = time.time()
        self.backoff = BACKOFF_FIRST
        if self.last_error is not None:
            self.reconnects += 1
        self.events.emit("fleet_up", node=self.node, url=redact(self.url),
                         down_seconds=round(time.time() - was_down, 1) if was_down else None,
                         pushed=pushed + stated, pulled=(pulled or {}).get("bans", 0),
                         seconds=round(time.monotonic() - started, 3))
        self.last_error = None
        self.down_since = None
        self._last_snapshot = 0.0
        self._heartbeat(store, applier.kernel.sets)

    # ------------------------------------------------------------ outbound

    def _load_cursor(self, store: Store) -> None:
        if self.cursor is not None:
            return
        saved = store.load_snapshot(CURSOR_SNAPSHOT)
        if saved is not None and isinstance(saved[1], dict) and isinstance(
                saved[1].get("journal"), int):
            self.cursor = min(saved[1]["journal"], store.last_journal_id())
        else:
            # first start with a fleet: the active bans are pushed whole by the first re-sync
            self.cursor = store.last_journal_id()
            store.save_snapshot(CURSOR_SNAPSHOT, {"journal": self.cursor})

    def _push_journal(self, store: Store, budget: float | None = PUSH_BUDGET) -> int:
        """Send local changes made since the cursor; the cursor moves only once Redis has them."""
        assert self.cursor is not None
        started = time.monotonic()
        sent = 0
        while True:
            entries = store.journal_after(self.cursor, PUSH_BATCH)
            if not entries:
                break
            now = time.time()
            changes = [wire.change_from_journal(e, self.node) for e in entries]
            self._send([c for c in changes if wire.live(c, now)])
            self.cursor = entries[-1].id
            store.save_snapshot(CURSOR_SNAPSHOT, {"journal": self.cursor})
            sent += len(entries)
            if budget is not None and time.monotonic() - started > budget:
                break
        return sent

    def _send(self, changes: list[dict[str, Any]]) -> int:
        """Merge changes into Redis (which publishes what it accepted); returns that count."""
        accepted = 0
        for key, ops in ((self.keys.bans, ("ban", "unban")), (self.keys.known, ("known",)),
                         (self.keys.allow, ("allow", "disallow")),
                         (self.keys.endpoints, wire.ENDPOINT_OPS)):
            mine = [c for c in changes if c["op"] in ops]
            for i in range(0, len(mine), PUSH_BATCH):
                chunk = json.dumps(mine[i:i + PUSH_BATCH], separators=(",", ":"))
                accepted += int(self._merge(keys=[key], args=[self.keys.channel, self.node,
                                                              chunk]))
        self.counts["pushed"] += accepted
        return accepted

    def _push_state(self, store: Store) -> int:
        """Push active local bans (and known sources) Redis lacks or holds shorter, unless a later
        unban in Redis says otherwise."""
        now = time.time()
        pending: list[dict[str, Any]] = [wire.change_from_row(r, self.node)
                                         for r in store.active_bans(now=now)]
        pending += [{"op": "known", "ip": ip, "ts": now, "until": now + left, "node": self.node}
                    for ip, left in store.active_known(now=now)]
        pending += [wire.change_from_allow(row.net, row.reason, row.created, row.until,
                                           self.node) for row in store.active_allows(now)]
        pending += endpoints.from_state(
            now, self.node, store.active_known_pairs(now=now), store.active_pair_bans(now=now),
            [h for kind in endpoints.HOLDS for h in store.active_holds(kind, now=now)])
        out: list[dict[str, Any]] = []
        for key, ops in ((self.keys.bans, ("ban",)), (self.keys.known, ("known",)),
                         (self.keys.allow, ("allow",)),
                         (self.keys.endpoints, endpoints.ITEMS)):
            mine = [c for c in pending if c["op"] in ops]
            for i in range(0, len(mine), SQL_CHUNK):
                chunk = mine[i:i + SQL_CHUNK]
                fields = [c["key"] if "key" in c else c["ip"] for c in chunk]
                current = self.client.hmget(key, fields)
                for change, raw in zip(chunk, current, strict=True):
                    cur = wire.valid_change(wire.decode(raw), now) if raw is not None else None
                    if cur is None or wire.supersedes(change, cur):
                        out.append(change)
        return self._send(out) if out else 0

    # ------------------------------------------------------------ inbound

    def _drain(self, applier: Applier) -> None:
        """Apply what other nodes published (waits up to POLL_SECONDS for the first message)."""
        changes: list[dict[str, Any]] = []
        origins: set[str] = set()
        bad: list[str] = []
        conn = self.pubsub.connection
        # Wait for data without reading, then read each message whole with the socket timeout:
        # a short read timeout would cut a large message in half under load.
        if conn is None or not conn.can_read(timeout=POLL_SECONDS):
            return
        taken = 0
        while True:
            message = self.pubsub.get_message(timeout=SOCKET_TIMEOUT)
            if message is not None and message.get("type") == "message":
                wire.read_message(message.get("data"), self.node, changes, origins, bad)
            taken += 1
            if taken >= MAX_DRAIN or len(changes) >= PUSH_BATCH or not conn.can_read(timeout=0):
                break
        self.stats.reject("pubsub", bad)
        if not changes:
            return
        self.counts["received"] += len(changes)
        result = applier.apply(changes, live=True)
        self.stats.account(result)
        self.stats.lags(result.lags)
        if (result.bans or result.unbans or result.known or result.full or result.errors
                or result.allows or result.disallows or result.endpoints):
            self.events.emit(
                "fleet_applied", origin=sorted(origins), bans=len(result.bans),
                unbans=len(result.unbans), known=result.known, skipped=result.skipped,
                allows=len(result.allows) or None, disallows=len(result.disallows) or None,
                endpoints=len(result.endpoints) or None,
                full=result.full or None, errors=result.errors or None,
                lag_ms=round(max(result.lags) * 1000, 1) if result.lags else None,
                ips=(result.bans + result.unbans)[:EVENT_IPS])

    def _pull(self, applier: Applier, deadline: float | None = None) -> dict[str, int] | None:
        """Apply every fleet entry this node lacks; None when the deadline cut it short."""
        totals = {"bans": 0, "unbans": 0, "known": 0, "allowed": 0, "allows": 0}
        # the allow list first: fleet bans of sources it covers are then never applied
        for key in (self.keys.allow, self.keys.bans, self.keys.known, self.keys.endpoints):
            cursor = 0
            while True:
                cursor, page = self.client.hscan(key, cursor, count=1000)
                now = time.time()
                changes, bad = wire.read_page(page, now)
                self.stats.reject(key, bad)
                result = applier.apply(changes, live=False)
                self.stats.account(result, live=False)
                totals["bans"] += len(result.bans)
                totals["unbans"] += len(result.unbans)
                totals["known"] += result.known
                totals["allowed"] += len(result.allowed)
                totals["allows"] += len(result.allows)
                if cursor == 0:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    return None
        self.counts["pulled"] += (totals["bans"] + totals["unbans"] + totals["known"]
                                  + totals["allows"])
        return totals

    # ------------------------------------------------------------ housekeeping

    def _heartbeat(self, store: Store, sets: Any, stopped: bool = False) -> None:
        self._last_heartbeat = time.monotonic()
        now = time.time()
        self.local_counts = {"set": count_set(sets), "store": count_store_bans(store, now)}
        beat = {"ts": now, "instance": self.instance, "bans_set": self.local_counts["set"],
                "bans_store": self.local_counts["store"], "up_since": self.up_since,
                "stopped": stopped}
        self.client.hset(self.keys.nodes, self.node, json.dumps(beat))
        nodes = {}
        for name, raw in self.client.hgetall(self.keys.nodes).items():
            data = wire.parse_beat(raw)
            if data is not None:
                nodes[wire.redis_name(name)] = data
        self.nodes = nodes
        mine = nodes.get(self.node, {})
        if mine.get("instance") not in (None, self.instance) and not self._conflict_reported:
            self._conflict_reported = True
            self.events.emit("fleet_node_conflict", node=self.node,
                             note="another floodguard uses this [fleet] node name")
        stats = self.client.hgetall(self.keys.stats)
        self.redis_counts = {wire.redis_name(k): wire.number(v) for k, v in stats.items()}
        self.redis_counts["entries"] = float(self.client.hlen(self.keys.bans))

    def state(self) -> dict[str, Any]:
        """What ``floodguard status``, the metrics and ``fleet status`` show about the link."""
        now = time.time()
        return {
            "node": self.node, "instance": self.instance, "url": redact(self.url),
            "channel": self.keys.channel, "up": self.up, "up_since": self.up_since,
            "down_since": self.down_since, "last_error": self.last_error,
            "reconnects": self.reconnects, "counts": dict(self.counts),
            "lag": self.stats.lag_summary(), "cursor": self.cursor,
            "local": dict(self.local_counts), "redis": dict(self.redis_counts),
            "monitor": self.cfg.guard.mode == "monitor",
            "nodes": {name: {"age": round(now - wire.number(d.get("ts")), 1),
                             "bans_set": d.get("bans_set"), "bans_store": d.get("bans_store"),
                             "stopped": bool(d.get("stopped"))}
                      for name, d in sorted(self.nodes.items())},
        }

    def _snapshot(self, store: Store, force: bool = False) -> None:
        if not force and time.monotonic() - self._last_snapshot < SNAPSHOT_EVERY:
            return
        self._last_snapshot = time.monotonic()
        data = self.state()
        data["journal_backlog"] = max(0, store.last_journal_id() - (self.cursor or 0))
        store.save_snapshot(SNAPSHOT, data)
