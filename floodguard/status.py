"""What ``floodguard status`` and the metrics show: one snapshot of every layer, as plain data.

Sources: the kernel (our rules' counters, how full the sets, hashlimit tables and the
conntrack table are), the guard's counters that each worker
publishes to the state store every second, the bans in the store, and the registrar's bindings
(same database). Rates come from two snapshots taken some time apart.

The state database is read, never repaired here: a damaged one is reported (``state`` and a
health line) and left for ``floodguard run``/``apply`` to move aside; databases they moved
aside are reported until an operator deletes them.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from floodguard import admission_control
from floodguard.config import Config
from floodguard.store import CORRUPT_SNAPSHOT, Store, StoreError, quarantined

GUARD_STALE_AFTER = 5.0  # a worker publishes every second; older than this: not running
NEAR_FULL = 0.8  # a set, hashlimit table or the conntrack table this full is a health problem

# the chains whose rules limit (raw: per source and the budget; filter: string matches)
LIMIT_CHAINS = ("FLOODGUARD-LIMIT", "FLOODGUARD-TLSLIMIT", "FLOODGUARD-SIP", "FLOODGUARD-TLS")


@functools.cache
def _hashlimit_reader() -> Any:
    """One reader per process, so repeated snapshots (metrics scrapes, ``status --watch``)
    keep the cost of counting the hashlimit tables bounded."""
    from floodguard.kernel.hashlimit import TableReader

    return TableReader()


def _kernel(cfg: Config) -> dict[str, Any]:
    from floodguard.kernel import KernelError, conntrack, firewall

    size = conntrack.table_size()
    tracked = None if size is None else {"entries": size[0], "capacity": size[1]}
    try:
        data = firewall.status(cfg)
    except (KernelError, OSError) as exc:
        return {"ok": False, "error": " ".join(str(exc).split()), "rules": [], "sets": [],
                "installed": False, "hashlimits": [], "conntrack": tracked}
    data["hashlimits"] = [table.as_dict() for table in _hashlimit_reader()(
        [(rule["family"], rule["rule"]) for rule in data["rules"]])]
    data["conntrack"] = tracked
    drops: dict[str, int] = {}
    queued = 0
    for rule in data["rules"]:
        spec = rule["rule"]
        counting = rule["chain"] in LIMIT_CHAINS and " -j " not in f" {spec}"  # monitor
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
    if "--icase" in spec and "-m hashlimit" not in spec:
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
    if "fg-pro-" in spec:
        return "proof-budget"
    return "other"


def _guard(store: Store, now: float) -> dict[str, Any]:
    workers = []
    verdicts: dict[str, int] = {}
    learned: dict[str, int] = {}
    offenders: dict[str, int] = {}
    latency: dict[str, Any] = {"buckets": [], "counts": [], "sum": 0.0}
    for name, (saved, data) in store.counter_snapshots().items():
        alive = now - saved < GUARD_STALE_AFTER
        workers.append({"name": name, "alive": alive,
                        "age": round(now - saved, 1), "set_errors": data.get("set_errors", 0),
                        "tables": {k.removeprefix("table:"): v
                                   for k, v in data.get("engine", {}).items()
                                   if k.startswith("table:")}})
        if not alive:
            continue
        for key, value in data.get("verdicts", {}).items():
            verdicts[key] = verdicts.get(key, 0) + value
        for key, value in data.get("engine", {}).items():
            if key in ("failures", "successes", "unproven", "stale", "responses",
                       "shared_nonces"):
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


def _state(cfg: Config, store: Store | None, error: str | None) -> dict[str, Any]:
    """The state database: readable or not, and the damaged copies moved aside from it."""
    record = store.load_snapshot(CORRUPT_SNAPSHOT) if store is not None else None
    last = record[1] if record is not None and isinstance(record[1], dict) else {}
    moved = []
    for path in quarantined(cfg.state.path):
        try:
            entry: dict[str, Any] = {"path": str(path), "time": path.stat().st_mtime}
        except OSError:
            continue  # deleted meanwhile
        if last.get("moved_to") == str(path.absolute()):
            entry.update(time=last.get("time"), error=last.get("error"))
        moved.append(entry)
    return {"ok": error is None, "path": cfg.state.path, "error": error,
            "last_recovery": last or None, "moved_aside": moved}


def collect(cfg: Config, *, kernel: bool = True) -> dict[str, Any]:
    """One snapshot of every layer."""
    now = time.time()
    try:
        store = Store(cfg.state.path, recover=False)
    except StoreError as exc:
        data = _unreadable(cfg, now, " ".join(str(exc).split()))
    else:
        try:
            data = _from_store(cfg, store, now)
        finally:
            store.close()
    data["kernel"] = _kernel(cfg) if kernel else {"ok": None}
    data["health"] = health(data)
    data["notes"] = notes(data)
    return data


def _unreadable(cfg: Config, now: float, error: str) -> dict[str, Any]:
    """What can be shown without the state database."""
    return {"time": now, "mode": cfg.guard.mode,
            "guard": {"ok": False, "workers": [], "verdicts": {}, "learned": {},
                      "ban_latency": {"buckets": [], "counts": [], "sum": 0.0},
                      "top_sources": []},
            "bans": [], "bans_by_kind": {}, "bans_by_reason": {}, "top_aors": [],
            "registrations": None, "admission": None, "fleet": None,
            "state": _state(cfg, None, error)}


def _from_store(cfg: Config, store: Store, now: float) -> dict[str, Any]:
    """Every layer the state database tells about."""
    bans = store.active_bans(now=now)
    by_aor: dict[str, int] = {}
    for row in bans:
        if row.aor:
            by_aor[row.aor] = by_aor.get(row.aor, 0) + 1
    return {
        "time": now,
        "mode": cfg.guard.mode,
        "guard": _guard(store, now),
        "bans": [row.as_dict(now) for row in bans],
        "bans_by_kind": _count(row.kind for row in bans),
        "bans_by_reason": _count(row.reason for row in bans),
        "top_aors": [{"aor": a, "bans": n}
                     for a, n in sorted(by_aor.items(), key=lambda kv: -kv[1])[:10]],
        "registrations": store.registrations(now),
        "admission": admission_control.current(store, cfg),
        "fleet": _fleet(cfg, store, now),
        "state": _state(cfg, store, None),
    }


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def health(data: dict[str, Any]) -> list[str]:
    """Problems an operator must look at; empty when all is well."""
    problems = []
    state = data.get("state") or {}
    if state.get("ok") is False:
        problems.append(f"state database unreadable ({state.get('error')}): floodguard run and "
                        "apply move a damaged one aside and start fresh")
    for moved in state.get("moved_aside", []):
        stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(moved["time"]))
        why = f", {moved['error']}" if moved.get("error") else ""
        problems.append(f"state database was damaged ({stamp}{why}) and moved aside to "
                        f"{moved['path']}: bans and registrations saved before then are lost; "
                        "delete that file once inspected")
    kernel = data["kernel"]
    if kernel.get("ok") is False:
        problems.append("kernel rules missing: " + kernel.get("error", "run floodguard apply"))
    for row in kernel.get("sets", []):
        if row.get("maxelem") and row["entries"] >= NEAR_FULL * row["maxelem"]:
            problems.append(f"set {row['name']} is {row['entries']}/{row['maxelem']} full")
    for table in kernel.get("hashlimits", []):
        if table["capacity"] and table["entries"] >= NEAR_FULL * table["capacity"]:
            problems.append(f"hashlimit table {table['name']} ({table['purpose']}, IPv"
                            f"{table['family']}) is {table['entries']}/{table['capacity']} full: "
                            "when full, the kernel drops every new source's packets")
    tracked = kernel.get("conntrack")
    if tracked and tracked["capacity"] and tracked["entries"] >= NEAR_FULL * tracked["capacity"]:
        problems.append(f"conntrack table is {tracked['entries']}/{tracked['capacity']} full: "
                        "when full, the kernel drops every new flow")
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


def notes(data: dict[str, Any]) -> list[str]:
    """What an operator should know but that is no fault of floodguard's."""
    out = []
    shared = data["guard"].get("learned", {}).get("shared_nonces", 0)
    if shared:
        out.append(f"the registrar gave {shared} nonces to more than one client: floodguard "
                   "relies on its own proof token, but the registrar's replay protection is weak "
                   "(Kamailio: set auth_checks_register, e.g. 11, and a secret)")
    return out


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
