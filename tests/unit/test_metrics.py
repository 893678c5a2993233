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
    assert 'floodguard_set_capacity{set="floodguard-ban"} 1000.0' in text
    reg = 'family="4",purpose="REGISTER per source",table="fg-reg-0123abcd"'
    assert f"floodguard_hashlimit_entries{{{reg}}} 95.0" in text
    assert f"floodguard_hashlimit_capacity{{{reg}}} 100.0" in text
    # the shared budget table has one bucket and no capacity of its own
    assert 'floodguard_hashlimit_entries{family="4",purpose="unknown sources' in text
    assert "fg-bud-4567cdef" not in "".join(
        line for line in text.splitlines() if line.startswith("floodguard_hashlimit_capacity"))
    assert "floodguard_conntrack_entries 12.0" in text
    assert "floodguard_conntrack_capacity 262144.0" in text
    [info] = [line for line in text.splitlines() if line.startswith("floodguard_build_info{")]
    assert 'backend="nft"' in info and 'version="' in info and info.endswith(" 1.0")


def test_dashboard_and_alerts_only_use_metrics_that_exist(monkeypatch, status_sample):
    names = set(re.findall(r"^(floodguard_\w+?)(?:_total|_bucket|_count|_sum)?[{ ]",
                           exposition(monkeypatch, status_sample), re.M))
    exported = names | {n + s for n in names for s in ("_total", "_bucket", "_count", "_sum")}
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append((EXAMPLES / "alerts.yml").read_text())
    used = {m for e in exprs for m in re.findall(r"floodguard_\w+", e)}
    assert used and used <= exported, used - exported


def test_hashlimit_tables_counted_against_their_rules_capacity(tmp_path):
    """Entries are the kernel listing's lines; the capacity is the htable-max of the rule
    that made the table (of the same family), none for a table without one."""
    from floodguard.kernel import hashlimit

    (tmp_path / "ipt_hashlimit").mkdir()
    (tmp_path / "ip6t_hashlimit").mkdir()
    line = "9 10.0.0.{n}:0->0.0.0.0:0 3200 32000 3200\n"
    (tmp_path / "ipt_hashlimit" / "fg-reg-aaaa").write_text(
        "".join(line.format(n=n) for n in range(7)))
    (tmp_path / "ipt_hashlimit" / "fg-bud-bbbb").write_text(line.format(n=0))
    (tmp_path / "ipt_hashlimit" / "other-table").write_text(line.format(n=0))
    (tmp_path / "ip6t_hashlimit" / "fg-reg-aaaa").write_text("")
    rules = [
        (4, "-m string --string \"REGISTER sip\" --algo bm --to 160 --icase -m hashlimit "
            "--hashlimit-above 5/sec --hashlimit-burst 10 --hashlimit-mode srcip "
            "--hashlimit-name fg-reg-aaaa --hashlimit-htable-size 16 --hashlimit-htable-max 8 "
            "--hashlimit-htable-expire 10000 -j DROP"),
        (4, "-m hashlimit --hashlimit-above 20/sec --hashlimit-burst 20 --hashlimit-name "
            "fg-bud-bbbb --hashlimit-htable-expire 10000 -j DROP"),
        (6, "-m hashlimit --hashlimit-above 5/sec --hashlimit-name fg-reg-aaaa "
            "--hashlimit-htable-max 64 -m comment --comment \"--hashlimit-htable-max 1\""),
    ]
    found = {(t.family, t.name): (t.entries, t.capacity)
             for t in hashlimit.tables(rules, proc=tmp_path)}
    assert found == {(4, "fg-bud-bbbb"): (1, None), (4, "fg-reg-aaaa"): (7, 8),
                     (6, "fg-reg-aaaa"): (0, 64)}
    assert hashlimit.tables(rules, proc=tmp_path / "missing") == []


def test_table_reader_counts_again_only_within_its_cpu_share(tmp_path):
    """A count that took 1 s of CPU is repeated after 20 s at a 5 % share; in between the last
    count comes back with the current rules' capacities."""
    from floodguard.kernel import hashlimit

    (tmp_path / "ipt_hashlimit").mkdir()
    table = tmp_path / "ipt_hashlimit" / "fg-reg-aaaa"
    table.write_text("9 10.0.0.1:0->0.0.0.0:0 3200 32000 3200\n")
    now, cpu = [0.0], [0.0]

    def costly() -> float:
        cpu[0] += 1.0  # each look at the CPU clock 1 s later: one count costs 1 s
        return cpu[0]

    reader = hashlimit.TableReader(0.05, tmp_path, clock=lambda: now[0], cpu=costly)
    rule = [(4, "-m hashlimit --hashlimit-name fg-reg-aaaa --hashlimit-htable-max 8")]
    assert [(t.entries, t.capacity) for t in reader(rule)] == [(1, 8)]
    table.write_text("9 10.0.0.1:0->0.0.0.0:0 3200 32000 3200\n" * 3)
    now[0] = 19.0
    bigger = [(4, "-m hashlimit --hashlimit-name fg-reg-aaaa --hashlimit-htable-max 16")]
    assert [(t.entries, t.capacity) for t in reader(bigger)] == [(1, 16)]
    now[0] = 20.0
    assert [(t.entries, t.capacity) for t in reader(bigger)] == [(3, 16)]
