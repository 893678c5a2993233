"""The fleet's sweep: one node at a time deletes expired entries from Redis, one page per link
step, counts the live ones into ``<p>:stats`` and forgets nodes silent for a day."""

from __future__ import annotations

import time
from typing import Any

from floodguard.fleet import wire

SWEEP_EVERY = 30.0
SWEEP_PAGE = 500
SWEEP_GRACE = 60.0  # seconds past `until` before the sweep deletes an entry
NODE_FORGET = 86400.0  # the sweep forgets nodes silent for this long


class Sweeper:
    """A sweep in progress (or the time of the next one) for one link."""

    def __init__(self, keys: wire.Keys, node: str) -> None:
        self.keys = keys
        self.node = node
        self.script: Any = None  # the sweep Lua script, registered on each connection
        self._next_sweep = 0.0
        self._run: dict[str, Any] | None = None

    def attach(self, client: Any) -> None:
        """A new connection: register the script there."""
        self.script = client.register_script(wire.SWEEP_LUA)

    def reset(self) -> None:
        """The connection is lost: a sweep in progress starts again next time."""
        self._run = None

    def step(self, client: Any) -> None:
        """Delete expired entries, one page per step, on one node at a time; count the rest."""
        if self._run is None:
            if time.monotonic() < self._next_sweep:
                return
            self._next_sweep = time.monotonic() + SWEEP_EVERY
            if not client.set(self.keys.sweeper, self.node, nx=True, ex=int(SWEEP_EVERY)):
                return
            self._run = {"keys": [self.keys.bans, self.keys.known, self.keys.allow,
                                  self.keys.endpoints],
                         "cursor": 0, "counts": {"bans": 0, "tombstones": 0, "known": 0,
                                                 "allows": 0, "endpoints": 0, "deleted": 0}}
        sweep = self._run
        key = sweep["keys"][0]
        cursor, page = client.hscan(key, sweep["cursor"], count=SWEEP_PAGE)
        now = time.time()
        dead: list[Any] = []
        for ip, raw in page.items():
            change = wire.valid_change(wire.decode(raw), now)
            if change is None or wire.horizon(change) < now - SWEEP_GRACE:
                dead += [ip, raw]
            elif change["op"] == "ban":
                sweep["counts"]["bans"] += 1
            elif change["op"] in wire.LIFTS:
                sweep["counts"]["tombstones"] += 1
            elif change["op"] == "allow":
                sweep["counts"]["allows"] += 1
            elif change["op"] in wire.ENDPOINT_OPS:
                sweep["counts"]["endpoints"] += 1
            else:
                sweep["counts"]["known"] += 1
        if dead:
            sweep["counts"]["deleted"] += int(self.script(keys=[key], args=dead))
        sweep["cursor"] = cursor
        if cursor != 0:
            return
        sweep["keys"].pop(0)
        if sweep["keys"]:
            return
        for name, raw in client.hgetall(self.keys.nodes).items():
            data = wire.decode(raw)
            if not isinstance(data, dict) or now - wire.number(data.get("ts")) > NODE_FORGET:
                client.hdel(self.keys.nodes, name)
        client.hset(self.keys.stats, mapping={**sweep["counts"], "ts": now})
        self._run = None
