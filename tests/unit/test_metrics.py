"""Metrics exposition from a status snapshot, and the shipped dashboard and alerts."""

import json
import re
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

from floodguard import metrics
from floodguard.config import Config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "monitoring"


def exposition(monkeypatch, sample) -> str:
    data = sample()
    data["guard"]["verdicts"]["anomaly:registrations:spike"] = 2
    data["guard"]["learned"] = {"failures": 6, "successes": 40}
    data["guard"]["ban_latency"] = {"buckets": [0.001, 0.01], "counts": [3, 1, 0], "sum": 0.004}
    data["health"] = []
    data["registrations"]["options"] = {"sent": 100, "answers": 98, "timeouts": 2}
    data["admission"] = {"rate": 1331, "reason": "healthy and in demand"}
    monkeypatch.setattr(metrics, "collect", lambda cfg: data)
    monkeypatch.setattr(metrics, "queue_stats", lambda: [
        {"queue": 0, "waiting": 0, "queue_dropped": 5, "user_dropped": 1}])
    registry = CollectorRegistry()
    registry.register(metrics.FloodguardCollector(Config()))
    return generate_latest(registry).decode()


def test_exposition_has_every_layer(monkeypatch, status_sample):
    text = exposition(monkeypatch, status_sample)
    assert 'floodguard_kernel_dropped_packets_total{rule="register-rate"} 10.0' in text
    assert 'floodguard_guard_verdicts_total{reason="ok",verdict="pass"} 3.0' in text
    assert 'floodguard_anomalies_total{kind="spike",metric="registrations"} 2.0' in text
    assert 'floodguard_registrations_observed_total{outcome="failures"} 6.0' in text
    assert 'floodguard_ban_latency_seconds_bucket{le="0.01"} 4.0' in text
    assert 'floodguard_ban_latency_seconds_count 4.0' in text
    assert 'floodguard_registrations{state="offline"} 1.0' in text
    assert 'floodguard_queue_dropped_packets_total{queue="0",why="queue_full"} 5.0' in text
    assert 'floodguard_options_probes_total{outcome="timeouts"} 2.0' in text
    assert 'floodguard_set_fill_ratio{set="floodguard-ban"} 0.9' in text
    assert 'floodguard_active_bans{kind="suspend",reason="consecutive-failures"} 1.0' in text
    assert "floodguard_admission_rate 1331.0" in text


def test_dashboard_and_alerts_only_use_metrics_that_exist(monkeypatch, status_sample):
    names = set(re.findall(r"^(floodguard_\w+?)(?:_total|_bucket|_count|_sum)?[{ ]",
                           exposition(monkeypatch, status_sample), re.M))
    exported = names | {n + s for n in names for s in ("_total", "_bucket", "_count", "_sum")}
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append((EXAMPLES / "alerts.yml").read_text())
    used = {m for e in exprs for m in re.findall(r"floodguard_\w+", e)}
    assert used and used <= exported, used - exported


def test_kernel_table_full_lines_are_counted():
    from floodguard.kernel.messages import count

    log = ("[1.0] xt_hashlimit: max count of 1048576 reached\n"
           "[2.0] nf_conntrack: nf_conntrack: table full, dropping packet\n"
           "[3.0] eth0: link up\n")
    assert count(log) == {"hashlimit": 1, "ipset": 0, "conntrack": 1}
