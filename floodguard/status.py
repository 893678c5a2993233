"""What ``floodguard status`` and the metrics show: one snapshot of every layer, as plain data.

Sources: the kernel (our rules' counters, set sizes), the guard's counters that each worker
publishes to the state store every second, the bans in the store, and the registrar's bindings
(same database). Rates come from two snapshots taken some time apart.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from floodguard.config import Config
from floodguard.store import Store

GUARD_STALE_AFTER = 5.0  # a worker publishes every second; older than this: not running
SET_NEAR_FULL = 0.8


def _kernel(cfg: Config) -> dict[str, Any]:
    from floodguard.kernel import KernelError, firewall

    try:
        data = firewall.status(cfg)
    except (KernelError, OSError) as exc:
        return {"ok": False, "error": " ".join(str(exc).split()), "rules": [], "sets": [],
                "installed": False}
    drops: dict[str, int] = {}
    queued = 0
    for rule in data["rules"]:
        spec = rule["rule"]
        counting = rule["chain"] == "FLOODGUARD-SIP" and " -j " not in f" {spec}"  # monitor
        if spec.endswith("-j DROP") or counting:
            drops[_rule_name(rule)] = drops.get(_rule_name(rule), 0) + rule["packets"]
        elif "NFQUEUE" in spec and rule["chain"] != "FLOODGUARD-OUT":
            queued += rule["packets"]
    data["drops"] = drops
    data["queued"] = queued
    data["ok"] = data["installed"]
    return data


def _rule_name(rule: dict[str, Any]) -> str:
    """A short name for a drop rule: which layer it is."""
    spec = rule["rule"]
    if "floodguard-ban" in spec:
        return "ban-set"
    if "--icase" in spec:
        return "scanner"
    if "fg-gwy-" in spec:
        return "gateway"
    if "connlimit" in spec:
        return "tcp-connlimit"
    if "fg-syn-" in spec:
        return "tcp-syn"
    if "fg-reg-" in spec:
        return "register-rate"
    if "fg-sip-" in spec:
        return "sip-rate"
    if "fg-bud-" in spec:
        return "queue-budget"
    return "other"


def _guard(store: Store, now: float) -> dict[str, Any]:
    workers = []
    verdicts: dict[str, int] = {}
    learned: dict[str, int] = {}
    offenders: dict[str, int] = {}
    latency: dict[str, Any] = {"buckets": [], "counts": [], "sum": 0.0}
    rows = store.db.execute(
        "SELECT name, saved FROM snapshots WHERE name LIKE 'counters-%'").fetchall()
    for name, _ in rows:
        snap = store.load_snapshot(name)
        if snap is None:
            continue
        saved, data = snap
        alive = now - saved < GUARD_STALE_AFTER
        workers.append({"name": name.removeprefix("counters-"), "alive": alive,
                        "age": round(now - saved, 1), "set_errors": data.get("set_errors", 0),
                        "tables": {k.removeprefix("table:"): v
                                   for k, v in data.get("engine", {}).items()
                                   if k.startswith("table:")}})
        if not alive:
            continue
        for key, value in data.get("verdicts", {}).items():
            verdicts[key] = verdicts.get(key, 0) + value
        for key, value in data.get("engine", {}).items():
            if key in ("failures", "successes", "unproven", "stale", "responses"):
                learned[key] = learned.get(key, 0) + value
        hist = data.get("ban_latency")
        if hist:
            latency["buckets"] = hist["buckets"]
            counts = latency["counts"] or [0] * len(hist["counts"])
            latency["counts"] = [a + b for a, b in zip(counts, hist["counts"], strict=False)]
            latency["sum"] += hist["sum"]
        for ip, count in data.get("offenders", []):
            offenders[ip] = offenders.get(ip, 0) + count
    top = sorted(offenders.items(), key=lambda kv: -kv[1])[:10]
    return {"ok": any(w["alive"] for w in workers), "workers": workers, "verdicts": verdicts,
            "learned": learned, "ban_latency": latency,
            "top_sources": [{"ip": ip, "dropped": n} for ip, n in top]}


def _registrations(store: Store, now: float) -> dict[str, Any] | None:
    try:
        row = store.db.execute(
            "SELECT COUNT(*), COALESCE(SUM(online), 0) FROM reg_bindings WHERE expires_at > ?",
            (now,)).fetchone()
    except sqlite3.Error:
        return None  # the built-in registrar never ran against this database
    total, online = int(row[0]), int(row[1])
    out: dict[str, Any] = {"bindings": total, "online": online, "offline": total - online}
    try:
        meta = store.db.execute("SELECT value FROM reg_meta WHERE key = 'liveness'").fetchone()
        if meta is not None:
            probes = json.loads(meta[0])
            out["options"] = {k: int(probes.get(k, 0)) for k in ("sent", "answers", "timeouts")}
    except (sqlite3.Error, ValueError, AttributeError):
        pass  # an older registrar: no probe counts
    return out


def _fleet(cfg: Config, store: Store, now: float) -> dict[str, Any] | None:
    """The fleet link as the supervisor last published it; None when no fleet is configured."""
    if not cfg.fleet.redis_url:
        return None
    snap = store.load_snapshot("fleet")
    if snap is None or not isinstance(snap[1], dict):
        return {"running": False, "up": False, "age": None}
    saved, data = snap
    running = now - saved < GUARD_STALE_AFTER
    return {**data, "running": running, "up": running and bool(data.get("up")),
            "age": round(now - saved, 1)}


def collect(cfg: Config, *, kernel: bool = True) -> dict[str, Any]:
    """One snapshot of every layer."""
    now = time.time()
    store = Store(cfg.state.path)
    try:
        bans = store.active_bans(now=now)
        by_aor: dict[str, int] = {}
        for row in bans:
            if row.aor:
                by_aor[row.aor] = by_aor.get(row.aor, 0) + 1
        data: dict[str, Any] = {
            "time": now,
            "mode": cfg.guard.mode,
            "guard": _guard(store, now),
            "bans": [row.as_dict(now) for row in bans],
            "bans_by_kind": _count(row.kind for row in bans),
            "bans_by_reason": _count(row.reason for row in bans),
            "top_aors": [{"aor": a, "bans": n}
                         for a, n in sorted(by_aor.items(), key=lambda kv: -kv[1])[:10]],
            "registrations": _registrations(store, now),
            "fleet": _fleet(cfg, store, now),
        }
    finally:
        store.close()
    data["kernel"] = _kernel(cfg) if kernel else {"ok": None}
    data["health"] = health(data)
    return data


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def health(data: dict[str, Any]) -> list[str]:
    """Problems an operator must look at; empty when all is well."""
    problems = []
    kernel = data["kernel"]
    if kernel.get("ok") is False:
        problems.append("kernel rules missing: " + kernel.get("error", "run floodguard apply"))
    for row in kernel.get("sets", []):
        if row.get("maxelem") and row["entries"] >= SET_NEAR_FULL * row["maxelem"]:
            problems.append(f"set {row['name']} is {row['entries']}/{row['maxelem']} full")
    if not data["guard"]["ok"]:
        problems.append("guard not running (SIP passes through the kernel limits only)")
    fleet = data.get("fleet")
    if fleet is not None and fleet["running"] and not fleet["up"]:
        problems.append(f"fleet link down ({fleet.get('last_error') or 'connecting'}): bans are "
                        "not shared with the other nodes until Redis is reachable again")
    for worker in data["guard"]["workers"]:
        if worker["alive"] and worker["set_errors"]:
            problems.append(f"guard {worker['name']}: {worker['set_errors']} kernel set errors")
    return problems


def rates(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Packets per second per layer between two snapshots."""
    span = max(1e-3, after["time"] - before["time"])
    out: dict[str, float] = {}
    for layer, value in after["kernel"].get("drops", {}).items():
        out[f"kernel:{layer}"] = (value - before["kernel"].get("drops", {}).get(layer, 0)) / span
    out["kernel:queued"] = (after["kernel"].get("queued", 0)
                            - before["kernel"].get("queued", 0)) / span
    for key, value in after["guard"]["verdicts"].items():
        out[f"guard:{key}"] = (value - before["guard"]["verdicts"].get(key, 0)) / span
    return {k: round(max(0.0, v), 1) for k, v in out.items()}
