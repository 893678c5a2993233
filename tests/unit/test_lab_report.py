"""The lab's report: text table, JSON and the HTML page with its SVG plots."""

from __future__ import annotations

import json
import xml.dom.minidom

from floodguard.lab import report
from floodguard.lab.stats import Check


def _result(scenario: str, protected: bool) -> dict:
    return {
        "scenario": scenario, "protected": protected, "registrar": "floodguard",
        "duration_s": 4.0, "legit_attempted": 80, "legit_succeeded": 80 if protected else 31,
        "legit_success_pct": 100.0 if protected else 38.75,
        "latency_p50_ms": 1.3 if protected else 812.0, "latency_p99_ms": 9.9 if protected
        else 3900.0, "attack_sent": 160000, "attack_dropped_kernel": 158000 if protected else 0,
        "attack_dropped_kernel_by_rule": {"budget": 158000} if protected else {},
        "attack_dropped_guard": 2 if protected else 0,
        "attack_reached_registrar": 1998 if protected else 160000,
        "banned_sources": 0, "first_ban_s": None, "registrar_cpu_pct": 7.5,
        "registrar_socket_drops": 0 if protected else 140000, "guard_cpu_pct": 8.0,
        "guard_rss_mb_max": 70.0,
        "attack": {"botnet": {"sources": 20000, "per_source_rate": 2.0}},
        "timeline": {"seconds": 4, "t": [0.5, 1.0, 1.5, 2.0, 4.0],
                     "sent": [40000.0, 40000.0, 40000.0, 39000.0, 0.0],
                     "kernel": {"budget": [39600.0, 39600.0, 39600.0, 38600.0, 0.0]}
                     if protected else {},
                     "guard": [0.0, 1.0, 0.0, 0.0, 0.0],
                     "reached": [400.0, 399.0, 400.0, 400.0, 0.0],
                     "legit_ok": [20, 20, 20, 20] if protected else [10, 9, 7, 5],
                     "legit_failed": [0, 0, 0, 0] if protected else [10, 11, 13, 15]},
    }


def test_table_puts_modes_side_by_side_with_layers_and_checks() -> None:
    results = [_result("botnet", True), _result("botnet", False)]
    text = report.format_table(results, [Check("botnet", True, "kernel", True, "99%")])
    lines = text.splitlines()
    assert lines[0].startswith("botnet: ")
    header = lines[2].split()
    assert header == ["protected", "unprotected"]
    row = next(ln for ln in lines if ln.startswith("legit registrations"))
    assert "80/80 (100.00%)" in row and "31/80 (38.75%)" in row
    assert any(ln.strip().startswith("budget") and "158,000" in ln for ln in lines)
    assert any("registrar socket overflows" in ln and "140,000" in ln for ln in lines)
    assert "20,000 x 2.00/s" in text
    assert "[PASS] botnet (protected): kernel - 99%" in text


def test_table_with_one_mode_only() -> None:
    text = report.format_table([_result("botnet", False)])
    assert text.splitlines()[2].split() == ["unprotected"]


def test_json_is_a_list_with_the_required_keys() -> None:
    data = json.loads(report.to_json([_result("botnet", True)], timeline=False))
    assert isinstance(data, list) and len(data) == 1
    for key in ("scenario", "protected", "legit_attempted", "legit_succeeded", "attack_sent",
                "attack_dropped_kernel", "attack_dropped_guard", "attack_reached_registrar",
                "banned_sources", "first_ban_s"):
        assert key in data[0]
    assert "timeline" not in data[0]


def test_svg_plot_is_well_formed_and_draws_every_series() -> None:
    svg = report.svg_plot(_result("botnet", True)["timeline"], "botnet - protected")
    doc = xml.dom.minidom.parseString(svg)
    titles = {t.firstChild.data for t in doc.getElementsByTagName("title") if t.firstChild}
    assert {"sent", "kernel: budget", "guard", "reached", "20 ok"} <= titles
    assert len(doc.getElementsByTagName("polyline")) == 4


def test_svg_plot_copes_with_an_empty_timeline() -> None:
    svg = report.svg_plot({"seconds": 0}, "empty <&>")
    xml.dom.minidom.parseString(svg)
    assert "empty &lt;&amp;&gt;" in svg


def test_html_report_is_written(tmp_path) -> None:
    results = [_result("botnet", True), _result("botnet", False)]
    page = report.write_report(tmp_path / "out", results,
                               [Check("botnet", False, "overwhelmed", False, "x")], ["a note"])
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count("<svg") == 2
    assert "[FAIL] botnet (unprotected): overwhelmed" in text and "a note" in text
    assert json.loads((tmp_path / "out" / "results.json").read_text())[1]["protected"] is False
