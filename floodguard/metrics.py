"""Prometheus exposition on ``metrics.listen``: every layer's counters, bans, sets, queues.

A custom collector reads a fresh status snapshot on each scrape (see status.py), so the numbers
always agree with ``floodguard status``; nothing is kept in this process between scrapes but
the last count of the hashlimit tables (a full one is re-counted only as often as its cost
allows: ``hashlimit.TableReader``). How full the kernel's tables are (ipsets, hashlimit tables,
conntrack) is read from the tables themselves, entries next to capacity, so an alert can fire
before one fills: a full hashlimit table or conntrack table drops every new source, a full ban
set refuses new bans.
"""

from __future__ import annotations

import importlib.util
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from floodguard import __version__
from floodguard.config import Config, split_listen
from floodguard.status import collect

NFQUEUE_PROC = Path("/proc/net/netfilter/nfnetlink_queue")


def queue_stats(path: Path = NFQUEUE_PROC) -> list[dict[str, int]]:
    """Per-queue counters from the kernel: waiting, dropped (queue full) and user-dropped."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 7:
            out.append({"queue": int(fields[0]), "waiting": int(fields[2]),
                        "queue_dropped": int(fields[5]), "user_dropped": int(fields[6])})
    return out


class FloodguardCollector(Collector):
    """Collects one status snapshot per scrape."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def collect(self) -> Iterator[Any]:
        data = collect(self.cfg)
        kernel = data["kernel"]
        drops = CounterMetricFamily("floodguard_kernel_dropped_packets",
                                    "Packets dropped by floodguard's kernel rules", labels=["rule"])
        for rule, packets in sorted(kernel.get("drops", {}).items()):
            drops.add_metric([rule], packets)
        yield drops
        yield CounterMetricFamily("floodguard_kernel_queued_packets",
                                  "Requests handed to the guard's NFQUEUE",
                                  value=kernel.get("queued", 0))
        verdicts = CounterMetricFamily("floodguard_guard_verdicts",
                                       "Guard verdicts by outcome and reason",
                                       labels=["verdict", "reason"])
        anomalies = CounterMetricFamily("floodguard_anomalies",
                                        "Registration anomalies (baseline spikes and drops, one "
                                        "subnet dominating)", labels=["metric", "kind"])
        proof = CounterMetricFamily(
            "floodguard_guard_proof",
            "Proof of receipt: challenges that got the guard's token (tokenised) or could not "
            "(untokenised), UDP REGISTERs whose unproven credentials were taken out (stripped)",
            labels=["what"])
        for key, value in sorted(data["guard"]["verdicts"].items()):
            verdict, _, reason = key.partition(":")
            if verdict == "anomaly":
                metric, _, kind = reason.partition(":")
                anomalies.add_metric([metric, kind], value)
            elif verdict == "proof":
                proof.add_metric([reason], value)
            else:
                verdicts.add_metric([verdict, reason], value)
        yield verdicts
        yield anomalies
        yield proof
        learned = CounterMetricFamily(
            "floodguard_registrations_observed",
            "Authenticated REGISTER outcomes the guard learned from responses: failures are "
            "proven failures, unproven are credentials for a nonce never issued to that source",
            labels=["outcome"])
        for outcome, value in sorted(data["guard"].get("learned", {}).items()):
            learned.add_metric([outcome], value)
        yield learned
        hist = data["guard"].get("ban_latency", {})
        if hist.get("buckets"):
            cumulative, buckets = 0, []
            for bound, count in zip([*hist["buckets"], float("inf")], hist["counts"],
                                    strict=False):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency = HistogramMetricFamily(
                "floodguard_ban_latency_seconds",
                "From the deciding packet reaching the guard to the ban done (kernel set, store, "
                "event; the kernel set is written first)")
            latency.add_metric([], buckets, sum_value=hist["sum"])
            yield latency
        engine: dict[str, int] = {}
        for worker in data["guard"]["workers"]:
            for table, size in worker["tables"].items():
                engine[table] = engine.get(table, 0) + size
        tables = GaugeMetricFamily("floodguard_guard_table_entries",
                                   "Entries in the guard's bounded tables", labels=["table"])
        for table, size in sorted(engine.items()):
            tables.add_metric([table], size)
        yield tables
        yield GaugeMetricFamily("floodguard_guard_up", "Guard workers publishing counters",
                                value=sum(1 for w in data["guard"]["workers"] if w["alive"]))
        bans = GaugeMetricFamily("floodguard_active_bans", "Active bans and suspensions",
                                 labels=["kind", "reason"])
        counted: dict[tuple[str, str], int] = {}
        for ban in data["bans"]:
            key = (ban["kind"], ban["reason"])
            counted[key] = counted.get(key, 0) + 1
        for (kind, reason), n in sorted(counted.items()):
            bans.add_metric([kind, reason], n)
        yield bans
        yield from _tables(kernel)
        queues = CounterMetricFamily("floodguard_queue_dropped_packets",
                                     "Packets the kernel dropped at the NFQUEUE",
                                     labels=["queue", "why"])
        for q in queue_stats():
            queues.add_metric([str(q["queue"]), "queue_full"], q["queue_dropped"])
            queues.add_metric([str(q["queue"]), "user"], q["user_dropped"])
        yield queues
        admission = data.get("admission")
        if admission is not None:
            yield GaugeMetricFamily(
                "floodguard_admission_rate",
                "Requests/s let in from unknown sources (adapted to the registrar's health)",
                value=admission["rate"])
        regs = data["registrations"]
        if regs is not None:
            reg = GaugeMetricFamily("floodguard_registrations", "Current registrations",
                                    labels=["state"])
            reg.add_metric(["online"], regs["online"])
            reg.add_metric(["offline"], regs["offline"])
            yield reg
            if "options" in regs:
                probes = CounterMetricFamily(
                    "floodguard_options_probes",
                    "Registrar liveness OPTIONS: sent, answered, timed out (endpoint offline)",
                    labels=["outcome"])
                for outcome, value in sorted(regs["options"].items()):
                    probes.add_metric([outcome], value)
                yield probes
        yield from _fleet(data.get("fleet"))
        yield GaugeMetricFamily("floodguard_health_problems",
                                "Problems floodguard status reports", value=len(data["health"]))
        yield build_info(kernel.get("backend", ""))


def build_info(backend: str) -> GaugeMetricFamily:
    """Always 1; its labels say what runs: floodguard's version, Python's, the iptables backend
    of the installed rules, and whether the per-packet path is the mypyc-compiled build."""
    spec = importlib.util.find_spec("floodguard.guard")
    compiled = spec is not None and spec.origin is not None and not spec.origin.endswith(".py")
    info = GaugeMetricFamily("floodguard_build_info", "floodguard's build and environment",
                             labels=["version", "python", "backend", "compiled"])
    info.add_metric([__version__, platform.python_version(), backend or "none",
                     "true" if compiled else "false"], 1)
    return info


def _tables(kernel: dict[str, Any]) -> Iterator[Any]:
    """Entries and capacity of every kernel table that drops or refuses when full."""
    entries = GaugeMetricFamily("floodguard_set_entries", "ipset entries", labels=["set"])
    capacity = GaugeMetricFamily("floodguard_set_capacity", "ipset maxelem", labels=["set"])
    fill = GaugeMetricFamily("floodguard_set_fill_ratio", "ipset entries / maxelem",
                             labels=["set"])
    for row in kernel.get("sets", []):
        entries.add_metric([row["name"]], row["entries"])
        if row.get("maxelem"):
            capacity.add_metric([row["name"]], row["maxelem"])
            fill.add_metric([row["name"]], row["entries"] / row["maxelem"])
    yield from (entries, capacity, fill)
    labels = ["table", "family", "purpose"]
    buckets = GaugeMetricFamily("floodguard_hashlimit_entries",
                                "Buckets (sources) in a hashlimit table of floodguard's rules",
                                labels=labels)
    most = GaugeMetricFamily("floodguard_hashlimit_capacity",
                             "Buckets a per-source hashlimit table may hold (htable-max): when "
                             "full, the kernel drops every new source's packets", labels=labels)
    for table in kernel.get("hashlimits", []):
        key = [table["name"], str(table["family"]), table["purpose"]]
        buckets.add_metric(key, table["entries"])
        if table["capacity"]:
            most.add_metric(key, table["capacity"])
    yield from (buckets, most)
    tracked = kernel.get("conntrack")
    if tracked:
        yield GaugeMetricFamily("floodguard_conntrack_entries",
                                "Entries in the network namespace's conntrack table",
                                value=tracked["entries"])
        yield GaugeMetricFamily("floodguard_conntrack_capacity",
                                "nf_conntrack_max: when full, the kernel drops every new flow",
                                value=tracked["capacity"])


def _fleet(fleet: dict[str, Any] | None) -> Iterator[Any]:
    """The fleet link's state (nothing without [fleet])."""
    if fleet is None:
        return
    yield GaugeMetricFamily("floodguard_fleet_up",
                            "1 while the fleet link to Redis is up, 0 while down or not running",
                            value=1 if fleet["up"] else 0)
    bans = GaugeMetricFamily("floodguard_fleet_bans",
                             "Fleet bans: in Redis (as of the last sweep) and in this node's "
                             "kernel set and store", labels=["where"])
    redis_bans = fleet.get("redis", {}).get("bans")
    if redis_bans is not None:
        bans.add_metric(["redis"], redis_bans)
    for where, value in (fleet.get("local") or {}).items():
        if value is not None:
            bans.add_metric([where], value)
    yield bans
    counts = fleet.get("counts") or {}
    changes = CounterMetricFamily("floodguard_fleet_changes",
                                  "Ban, unban and known-good changes the fleet link moved",
                                  labels=["direction", "what"])
    changes.add_metric(["out", "all"], counts.get("pushed", 0))
    for what in ("bans", "unbans", "known"):
        changes.add_metric(["in", what], counts.get(what, 0))
    yield changes
    yield CounterMetricFamily("floodguard_fleet_allow_listed",
                              "Fleet bans not applied here: this node's allow list covers them",
                              value=counts.get("allowed", 0))
    yield CounterMetricFamily("floodguard_fleet_set_failures",
                              "Fleet entries the kernel set did not take (full or error)",
                              value=counts.get("full", 0) + counts.get("errors", 0))
    yield CounterMetricFamily("floodguard_fleet_reconnects",
                              "Times the fleet link came back after Redis was unreachable",
                              value=fleet.get("reconnects", 0))
    yield GaugeMetricFamily("floodguard_fleet_journal_backlog",
                            "Local changes not yet in Redis", value=fleet.get("journal_backlog", 0))
    now_nodes = fleet.get("nodes") or {}
    yield GaugeMetricFamily("floodguard_fleet_nodes", "Fleet nodes with a recent heartbeat",
                            value=sum(1 for n in now_nodes.values()
                                      if n.get("age", 1e9) < 10 and not n.get("stopped")))
    lag = fleet.get("lag") or {}
    if lag.get("buckets"):
        cumulative, buckets = 0, []
        for bound, count in zip([*lag["buckets"], float("inf")], lag["counts"], strict=False):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        hist = HistogramMetricFamily(
            "floodguard_fleet_apply_lag_seconds",
            "From a ban or unban on another node to this node's kernel set")
        hist.add_metric([], buckets, sum_value=lag.get("sum", 0.0))
        yield hist


def serve(cfg: Config) -> Any:
    """Start the exposition HTTP server in a thread; returns the server."""
    from prometheus_client import start_http_server

    registry = CollectorRegistry()
    registry.register(FloodguardCollector(cfg))
    host, port = split_listen(cfg.metrics.listen)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
