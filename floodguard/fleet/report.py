"""``floodguard fleet status``: the link as the running guard last saved it (its ``fleet``
snapshot), the nodes' heartbeats, and the fleet's bans in Redis compared with this node's."""

from __future__ import annotations

import time
from typing import Any

from floodguard.config import Config
from floodguard.fleet.apply import AllowList
from floodguard.fleet.client import FleetError, connect, errors, node_name, redact
from floodguard.fleet.link import NODE_ALIVE, SNAPSHOT
from floodguard.fleet.wire import Keys, decode, number, parse_beat, redis_name, valid_change
from floodguard.store import Store


def report(cfg: Config, store: Store, sets: Any | None, *,
           timeout: float = 2.0) -> dict[str, Any]:
    """``floodguard fleet status``: the link as the running guard last saw it, and Redis and
    this node's bans compared now (Redis read directly)."""
    if not cfg.fleet.redis_url:
        raise FleetError("no fleet configured ([fleet] redis_url is empty)")
    now = time.time()
    keys = Keys(cfg.fleet.channel)
    node = node_name(cfg)
    link = None
    snap = store.load_snapshot(SNAPSHOT)
    if snap is not None and isinstance(snap[1], dict):
        saved, link = snap
        link["age"] = round(now - saved, 1)
        link["running"] = now - saved < 5.0
    local_set: set[str] | None = None
    if sets is not None:
        try:
            local_set = {ip for ip, _ in sets.list("ban")}
        except Exception:  # noqa: BLE001 — the kernel view is optional here
            local_set = None
    store_ips = {row.ip for row in store.active_bans(now=now)}
    data: dict[str, Any] = {
        "node": node, "url": redact(cfg.fleet.redis_url), "channel": keys.channel, "link": link,
        "local": {"set": len(local_set) if local_set is not None else None,
                  "store": len(store_ips)},
    }
    try:
        client = connect(cfg.fleet.redis_url, timeout=timeout, name=f"floodguard-cli:{node}")
        try:
            data["nodes"] = _nodes(client, keys, now)
            fleet: dict[str, dict[str, Any]] = {}
            tombstones = 0
            for _ip, raw in client.hscan_iter(keys.bans, count=1000):
                change = valid_change(decode(raw), now)
                if change is None or change["until"] <= now:
                    continue
                if change["op"] == "unban":
                    tombstones += 1
                else:
                    fleet[change["ip"]] = change
            known = client.hlen(keys.known)
            allows = client.hlen(keys.allow)  # run-time allow list, tombstones included
        finally:
            client.close()
    except errors() as exc:
        data["redis"] = {"ok": False, "error": " ".join(str(exc).split())}
        return data
    allow = AllowList(cfg.blacklist.allow)
    allowed = sorted(ip for ip in fleet if allow.covering(ip))
    here = local_set if local_set is not None else store_ips
    missing = sorted(ip for ip in fleet if ip not in here and ip not in allowed)
    data["redis"] = {"ok": True, "bans": len(fleet), "tombstones": tombstones, "known": known,
                     "allow_entries": allows}
    data["compare"] = {
        "against": "set" if local_set is not None else "store",
        "missing_here": len(missing), "missing_sample": missing[:10],
        "allow_listed": len(allowed), "allow_listed_sample": allowed[:10],
        "only_here": len(here - set(fleet)),
    }
    return data


def _nodes(client: Any, keys: Keys, now: float) -> list[dict[str, Any]]:
    out = []
    for name, raw in client.hgetall(keys.nodes).items():
        beat = parse_beat(raw)
        if beat is None:
            continue
        age = now - number(beat.get("ts"))
        out.append({"node": redis_name(name),
                    "age": round(age, 1), "alive": age < NODE_ALIVE and not beat.get("stopped"),
                    "stopped": bool(beat.get("stopped")), "bans_set": beat.get("bans_set"),
                    "bans_store": beat.get("bans_store")})
    return sorted(out, key=lambda n: n["node"])
