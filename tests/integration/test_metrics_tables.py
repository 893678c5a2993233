"""Metrics that can fire, on the real stack: a flood from more sources than a (small) hashlimit
table holds and a full ban set show on the guard's metrics endpoint as entries = capacity, and
the shipped alert rules, fed that very exposition, fire for them (promtool)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from floodguard.kernel.rules import PACKAGE_DIR

from .conftest import SERVER4
from .guardkit import GuardLab

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save",
                              "promtool")

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "examples" / "monitoring" / "alerts.yml"
TABLE_MAX, SET_MAX = 64, 16
SOURCES, FIRST = 80, 100  # 10.250.0.100-179: more sources than a table holds

SEND = textwrap.dedent("""
    import socket, sys
    from floodguard.sip import build
    for n in range(int(sys.argv[1])):
        src = f"10.250.0.{int(sys.argv[3]) + n}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((src, 5060))
        sock.sendto(build.register(sys.argv[2], user="1001", local=f"{src}:5060",
                                   call_id=f"fill-{n}", cseq=1), (sys.argv[2], 5060))
        sock.close()
""")


def small_rules(tmp: Path) -> Path:
    """The shipped templates with small per-source tables and sets."""
    rules = tmp / "rules"
    shutil.copytree(PACKAGE_DIR, rules)
    tunables = rules / "tunables.toml"
    text = tunables.read_text()
    for key, value in (("htable_size", 16), ("htable_max", TABLE_MAX), ("maxelem", SET_MAX),
                       ("hashsize", 64)):
        text, n = re.subn(rf"^{key} = \d+$", f"{key} = {value}", text, flags=re.M)
        assert n == 1, key
    tunables.write_text(text)
    return rules


def scrape(lab: GuardLab) -> str:
    return lab.server.run(sys.executable, "-c", (
        "import urllib.request;"
        "print(urllib.request.urlopen('http://127.0.0.1:9477/metrics', timeout=10).read()"
        ".decode())")).stdout


def samples(text: str, name: str) -> dict[str, float]:
    """Labels -> value of one metric in an exposition."""
    return {m[1] or "": float(m[2])
            for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M)}


def promtool_test(tmp: Path, exposition: str, expected: dict[str, list[dict[str, Any]]]) -> None:
    """Feed the exposition to alerts.yml as constant series of job "floodguard" for 3 minutes
    (with `up` 1) and check exactly which alerts of `expected` fire then. The test file is
    JSON, which promtool reads as YAML."""
    target = 'job="floodguard",instance="sbc:9477"'
    series = [{"series": f"up{{{target}}}", "values": "1x12"}]
    for line in exposition.splitlines():
        m = re.match(r"^(floodguard_\w+)(?:\{(.*)\})? (\S+)$", line)
        if m is not None:
            labels = target + ("," + m[2] if m[2] else "")
            series.append({"series": f"{m[1]}{{{labels}}}", "values": f"{m[3]}x12"})
    checks = [{"eval_time": "3m", "alertname": alert,
               "exp_alerts": [{"exp_labels": a["labels"],
                               "exp_annotations": {"summary": a["summary"]}} for a in alerts]}
              for alert, alerts in expected.items()]
    test = tmp / "alerts_live_test.yml"
    test.write_text(json.dumps({
        "rule_files": [str(ALERTS)], "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": series, "alert_rule_test": checks}]}))
    result = subprocess.run(["promtool", "test", "rules", str(test)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_full_tables_show_in_the_metrics_and_fire_the_alerts(
        glab: GuardLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the guard's rule keeper renders the same templates as apply: both see the small tables
    monkeypatch.setenv("FLOODGUARD_RULES", str(small_rules(tmp_path)))
    glab.write_config("[scanner]\nuser_agents = []\n")
    glab.apply()
    glab.start_guard()
    veth = f"fg{glab.server.name.split('-')[1]}c"  # guardkit.build's client end
    glab.client.run("ip", "-batch", "-", stdin="".join(
        f"addr add 10.250.0.{FIRST + n}/24 dev {veth}\n" for n in range(SOURCES)))
    glab.client.run(sys.executable, "-c", SEND, str(SOURCES), SERVER4, str(FIRST))
    # more bans than the ban set holds: the kernel refuses the rest
    adds = "".join(f"add floodguard-ban 192.0.2.{n + 1}\n" for n in range(SET_MAX + 4))
    refused = glab.server.run("ipset", "restore", stdin=adds, check=False)
    assert "Hash is full" in refused.stderr
    text = scrape(glab)
    entries = samples(text, "floodguard_hashlimit_entries")
    capacity = samples(text, "floodguard_hashlimit_capacity")
    per_source = {re.search(r'purpose="([^"]+)"', labels)[1]: (value, capacity.get(labels))
                  for labels, value in entries.items() if 'family="4"' in labels}
    # the REGISTER and the all-SIP tables hold one bucket per source, up to their capacity;
    # the shared budgets have one bucket (once used) and no capacity of their own
    assert per_source == {"REGISTER per source": (TABLE_MAX, TABLE_MAX),
                          "all SIP per source": (TABLE_MAX, TABLE_MAX),
                          "TCP connections per source": (0, TABLE_MAX),
                          "unknown sources in all (admission budget)": (1, None),
                          "answers carrying the guard's token, in all (admission)": (0, None)}
    full = [labels for labels, value in entries.items()
            if 'family="4"' in labels and value == capacity.get(labels)]
    assert samples(text, "floodguard_set_entries")['{set="floodguard-ban"}'] == SET_MAX
    assert samples(text, "floodguard_set_capacity")['{set="floodguard-ban"}'] == SET_MAX
    assert samples(text, "floodguard_conntrack_capacity")[""] > 0
    [info] = samples(text, "floodguard_build_info")
    assert 'backend="nft"' in info and 'compiled="true"' in info
    assert samples(text, "floodguard_health_problems")[""] >= 3
    tables = []
    for labels in sorted(full):
        parts = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        tables.append({"labels": {"severity": "critical", "job": "floodguard",
                                  "instance": "sbc:9477", **parts},
                       "summary": f"hashlimit table {parts['table']} ({parts['purpose']}, IPv4) "
                                  "is 100% full: when full, the kernel drops every new source"})
    promtool_test(tmp_path, text, {
        "FloodguardRateTableNearlyFull": tables,
        "FloodguardSetNearlyFull": [{
            "labels": {"severity": "critical", "job": "floodguard", "instance": "sbc:9477",
                       "set": "floodguard-ban"},
            "summary": "ipset floodguard-ban is 100% full: when full, it takes no new entries"}],
        "FloodguardDown": [],
        "FloodguardGuardWorkersDown": [],
    })
