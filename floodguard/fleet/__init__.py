"""Fleet: bans, unbans, known-good sources, the run-time allow list and the endpoint state
(known-good pairs, endpoint suspensions, account protections, lockdowns) shared by every
floodguard node through Redis.

Each node keeps its own SQLite store as the source of truth for its own decisions. A fleet link
(one thread in the supervisor, see ``daemon.supervise``) connects that store to Redis:

* **Outbound.** Every ~50 ms it reads the store journal (every local ban, unban and known-good
  mark, whoever made it: a guard worker, ``floodguard blacklist add/remove``, a feed) and merges
  the changes into Redis with one Lua script call per batch, which also publishes the changes it
  accepted on the pub/sub channel. The journal position is persisted, so nothing is skipped
  across an outage or a restart.
* **Inbound.** A pub/sub subscriber applies the other nodes' changes to this node's kernel sets
  (with the remaining time) and store (without journalling them, so they are not echoed). The
  node's own allow list always wins: a fleet ban of an allow-listed address is reported
  (``fleet_ban_allowed``) and never enters the kernel. An unban from the fleet is also queued
  for the guard workers (as ``floodguard blacklist remove`` does), so their engines lift it too.
* **Start.** ``FleetLink.load`` pulls the current fleet bans before the guard workers start.
* **Outage.** When Redis is down or unreachable, the node works alone; the link retries with
  exponential backoff (``fleet_down`` / ``fleet_up`` events, the ``floodguard_fleet_up`` metric)
  and on reconnect re-syncs both ways: it pushes its journal backlog and every active local ban
  Redis lacks (or holds shorter), then pulls every fleet ban it lacks. No ban is lost.

Modules, by job:

* ``wire``   (pure) Redis key names, the changes, merge rules (also as Lua), checks of
  everything read from Redis (``fleet_invalid`` reports what is skipped).
* ``client`` this node's name, Redis URLs (schemes, redaction) and redis-py clients.
* ``apply``  applying changes to this node: allow list, kernel sets, store (raw SQL).
* ``endpoints`` (pure) the endpoint changes: from the journal, their checks, their fields.
* ``apply_endpoints`` applying those: store, events, the guard workers' commands.
* ``link``   ``FleetLink``, the supervisor's thread: push, pull, pub/sub, heartbeat, sweep.
* ``report`` ``floodguard fleet status``.

This package re-exports the names other modules use.
"""

from __future__ import annotations

from floodguard.fleet.apply import (
    AllowList,
    Applier,
    ApplyResult,
    KernelWriter,
    SetWriter,
    count_set,
    count_store_bans,
    netlink_writer,
)
from floodguard.fleet.client import FleetError, connect, node_name, redact
from floodguard.fleet.link import LOAD_TIMEOUT, FleetLink
from floodguard.fleet.report import report
from floodguard.fleet.wire import (
    BadEntry,
    Keys,
    change_from_journal,
    change_from_row,
    check_change,
    split_origin,
    supersedes,
    valid_change,
)

__all__ = [
    "LOAD_TIMEOUT",
    "AllowList",
    "Applier",
    "ApplyResult",
    "BadEntry",
    "FleetError",
    "FleetLink",
    "KernelWriter",
    "Keys",
    "SetWriter",
    "change_from_journal",
    "change_from_row",
    "check_change",
    "connect",
    "count_set",
    "count_store_bans",
    "netlink_writer",
    "node_name",
    "redact",
    "report",
    "split_origin",
    "supersedes",
    "valid_change",
]
