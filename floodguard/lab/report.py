"""Lab results as a text table (protected and unprotected side by side), JSON, and an HTML page
with one inline SVG plot per scenario and mode, drawn here (no plotting library).

The plots show, per second of the run, attack packets on a log scale: sent, dropped in the
kernel per layer, dropped by the guard, and reaching the registrar; below them the legitimate
registrations started in that second that succeeded and failed.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from floodguard.lab import scenarios
from floodguard.lab.stats import Check

MODES = ((True, "protected"), (False, "unprotected"))

# Series colours: attack sent, kernel layers, guard, registrar; legitimate ok / failed.
COLOURS = {
    "sent": "#444444",
    "ban": "#8e44ad",
    "scanner": "#16a085",
    "register-limit": "#2980b9",
    "sip-limit": "#5dade2",
    "budget": "#1abc9c",
    "token-class": "#48c9b0",
    "gateway": "#7f8c8d",
    "tcp": "#95a5a6",
    "other": "#bdc3c7",
    "guard": "#e67e22",
    "reached": "#c0392b",
    "ok": "#27ae60",
    "failed": "#c0392b",
}


# ---------------------------------------------------------------------------- text


def _n(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def _ms(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _pct(part: Any, whole: Any) -> str:
    if not whole or part is None:
        return ""
    return f" ({100.0 * part / whole:.1f}%)"


def result_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) rows for one result."""
    protected = bool(r["protected"])
    pct = r.get("legit_success_pct")
    rows = [
        ("legit registrations ok/attempted",
         f"{_n(r['legit_succeeded'])}/{_n(r['legit_attempted'])}"
         + ("" if pct is None else f" ({pct:.2f}%)")),
        ("REGISTER->200 p50 / p99 ms",
         f"{_ms(r.get('latency_p50_ms'))} / {_ms(r.get('latency_p99_ms'))}"),
        ("attack packets sent", _n(r["attack_sent"])),
        ("  dropped in kernel",
         (_n(r["attack_dropped_kernel"]) + _pct(r["attack_dropped_kernel"], r["attack_sent"]))
         if protected else "-"),
    ]
    for layer, count in sorted((r.get("attack_dropped_kernel_by_rule") or {}).items(),
                               key=lambda kv: -kv[1]):
        rows.append((f"    {layer}", _n(count)))
    rows.append(("  dropped by guard", _n(r["attack_dropped_guard"]) if protected else "-"))
    for reason, count in sorted((r.get("attack_dropped_guard_by_reason") or {}).items(),
                                key=lambda kv: -kv[1]):
        rows.append((f"    guard {reason}", _n(count)))
    rows += [
        ("  reached the registrar",
         _n(r["attack_reached_registrar"])
         + _pct(r["attack_reached_registrar"], r["attack_sent"])),
        ("sources banned", _n(r["banned_sources"]) if protected else "-"),
        ("time to first ban s", "-" if r.get("first_ban_s") is None else f"{r['first_ban_s']:.2f}"),
        ("registrar CPU %", _n(r.get("registrar_cpu_pct"))),
        ("registrar socket overflows", _n(r.get("registrar_socket_drops"))),
    ]
    if protected:
        rows.append(("guard CPU % / memory MB",
                     f"{_n(r.get('guard_cpu_pct'))} / {_n(r.get('guard_rss_mb_max'))}"))
    else:
        rows.append(("guard CPU % / memory MB", "-"))
    rows += scenario_details(r)
    return rows


def scenario_details(r: dict[str, Any]) -> list[tuple[str, str]]:
    """The scenario's own rows: what the attacker got out of it (the registry's ``detail``)."""
    scenario = scenarios.SCENARIOS.get(r["scenario"])
    got = scenario.detail(r) if scenario is not None and scenario.detail is not None else None
    if got is None:
        return []
    return [(label, value if isinstance(value, str) else _n(value))
            for label, value in (got if isinstance(got, list) else [got])]


def description(name: str) -> str:
    """The registry's one-line description of a scenario ('' for one it does not hold)."""
    scenario = scenarios.SCENARIOS.get(name)
    return scenario.description if scenario is not None else ""


def _side_by_side(modes: dict[bool, dict[str, Any]]
                  ) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The column titles and (label, value per column) rows of one scenario's modes."""
    columns = [(label, modes[p]) for p, label in MODES if p in modes]
    labels: list[str] = []
    values: dict[str, list[str]] = {}
    for i, (_, r) in enumerate(columns):
        for label, value in result_rows(r):
            if label not in values:
                labels.append(label)
                values[label] = ["-"] * len(columns)
            values[label][i] = value
    return [label for label, _ in columns], [(label, values[label]) for label in labels]


def format_table(results: Sequence[dict[str, Any]], checks: Sequence[Check] = ()) -> str:
    """One block per scenario, its modes side by side; then the checks."""
    by_scenario: dict[str, dict[bool, dict[str, Any]]] = {}
    for r in results:
        by_scenario.setdefault(r["scenario"], {})[bool(r["protected"])] = r
    blocks = []
    for scenario, modes in by_scenario.items():
        registrar = next(iter(modes.values())).get("registrar", "floodguard")
        title = f"{scenario}: {description(scenario)} [{registrar} registrar]"
        heads, rows = _side_by_side(modes)
        table = [["", *heads]] + [[label, *values] for label, values in rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines = [title, "-" * min(100, max(len(title), sum(widths) + 3 * len(widths)))]
        for row in table:
            cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                          strict=True)]
            lines.append("   ".join(cells).rstrip())
        blocks.append("\n".join(lines))
    if checks:
        lines = ["checks"]
        for c in checks:
            mode = "protected" if c.protected else "unprotected"
            lines.append(f"  [{'PASS' if c.passed else 'FAIL'}] {c.scenario} ({mode}): "
                         f"{c.name} - {c.detail}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def to_json(results: Sequence[dict[str, Any]], *, timeline: bool = True) -> str:
    """The results as a JSON list (one object per scenario and mode)."""
    out = []
    for r in results:
        item = dict(r)
        if not timeline:
            item.pop("timeline", None)
        out.append(item)
    return json.dumps(out, indent=2, default=str)


# ---------------------------------------------------------------------------- SVG


def _log_y(value: float, top: float, y0: float, height: float) -> float:
    """Map value on a log10(1 + v) scale with ``top`` at the top of the plot."""
    span = math.log10(1 + top) or 1.0
    return y0 + height - height * math.log10(1 + max(0.0, value)) / span


def _decade_ceiling(value: float) -> float:
    return 10.0 ** max(1, math.ceil(math.log10(max(10.0, value))))


def svg_plot(timeline: dict[str, Any], title: str, *, width: int = 640) -> str:
    """Two stacked panels: attack packets/s per layer (log scale), legitimate outcomes/s."""
    seconds = max(1, int(timeline.get("seconds", 0)))
    times = [float(t) for t in timeline.get("t", [])]
    span = max([float(seconds), *times])
    left, right, top_pad = 56, 140, 24
    plot_w = width - left - right
    h1, h2, gap = 170, 80, 34
    total_h = top_pad + h1 + gap + h2 + 30

    def x(t: float) -> float:
        return left + plot_w * min(max(t, 0.0), span) / span

    series: list[tuple[str, list[float]]] = [("sent", list(timeline.get("sent", [])))]
    for layer, values in (timeline.get("kernel") or {}).items():
        series.append((f"kernel: {layer}", list(values)))
    if any(timeline.get("guard", [])):
        series.append(("guard", list(timeline.get("guard", []))))
    series.append(("reached", list(timeline.get("reached", []))))
    peak = max([max(v) if v else 0.0 for _, v in series] + [10.0])
    top = _decade_ceiling(peak)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total_h}" '
             f'viewBox="0 0 {width} {total_h}" font-family="sans-serif" font-size="11">',
             f'<text x="{left}" y="14" font-size="12" font-weight="bold">'
             f'{html.escape(title)}</text>']
    y_top = top_pad
    parts.append(f'<rect x="{left}" y="{y_top}" width="{plot_w}" height="{h1}" fill="none" '
                 'stroke="#999"/>')
    decade = 1.0
    while decade <= top:
        y = _log_y(decade, top, y_top, h1)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
                     'stroke="#eee"/>')
        label = f"{decade:,.0f}" if decade < 1e6 else f"{decade:.0e}"
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
        decade *= 10
    parts.append(f'<text x="12" y="{y_top + h1 / 2:.0f}" transform="rotate(-90 12 '
                 f'{y_top + h1 / 2:.0f})" text-anchor="middle">attack packets/s</text>')
    for i, (name, values) in enumerate(series):
        key = name.removeprefix("kernel: ")
        colour = COLOURS.get(key, "#333")
        dash = ' stroke-dasharray="4 3"' if name == "sent" else ""
        if values and times:
            points = " ".join(f"{x(t):.1f},{_log_y(v, top, y_top, h1):.1f}"
                              for t, v in zip(times, values, strict=False))
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} '
                         f'points="{points}"><title>{html.escape(name)}</title></polyline>')
        ly = y_top + 10 + 14 * i
        parts.append(f'<line x1="{left + plot_w + 10}" y1="{ly}" x2="{left + plot_w + 28}" '
                     f'y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{left + plot_w + 32}" y="{ly + 4}">{html.escape(name)}</text>')
    # panel 2: legitimate registrations by the second they started in
    ok = list(timeline.get("legit_ok", []))
    failed = list(timeline.get("legit_failed", []))
    y2 = y_top + h1 + gap
    most = max([a + b for a, b in zip(ok, failed, strict=False)] + [1])
    parts.append(f'<rect x="{left}" y="{y2}" width="{plot_w}" height="{h2}" fill="none" '
                 'stroke="#999"/>')
    parts.append(f'<text x="{left - 4}" y="{y2 + 4}" text-anchor="end">{most}</text>')
    parts.append(f'<text x="{left - 4}" y="{y2 + h2 + 4}" text-anchor="end">0</text>')
    parts.append(f'<text x="12" y="{y2 + h2 / 2:.0f}" transform="rotate(-90 12 '
                 f'{y2 + h2 / 2:.0f})" text-anchor="middle">legit/s</text>')
    bar_w = max(2.0, min(24.0, plot_w / span * 0.7))
    for k in range(max(len(ok), len(failed))):
        good = ok[k] if k < len(ok) else 0
        bad = failed[k] if k < len(failed) else 0
        x0 = x(k + 0.5) - bar_w / 2
        h_ok = h2 * good / most
        h_bad = h2 * bad / most
        if good:
            parts.append(f'<rect x="{x0:.1f}" y="{y2 + h2 - h_ok:.1f}" width="{bar_w:.1f}" '
                         f'height="{h_ok:.1f}" fill="{COLOURS["ok"]}"><title>{good} ok'
                         '</title></rect>')
        if bad:
            parts.append(f'<rect x="{x0:.1f}" y="{y2 + h2 - h_ok - h_bad:.1f}" '
                         f'width="{bar_w:.1f}" height="{h_bad:.1f}" fill="{COLOURS["failed"]}">'
                         f'<title>{bad} failed</title></rect>')
    for i, (name, colour) in enumerate((("succeeded", COLOURS["ok"]),
                                        ("failed", COLOURS["failed"]))):
        ly = y2 + 10 + 14 * i
        parts.append(f'<rect x="{left + plot_w + 10}" y="{ly - 5}" width="18" height="8" '
                     f'fill="{colour}"/>')
        parts.append(f'<text x="{left + plot_w + 32}" y="{ly + 3}">{name}</text>')
    step = max(1, math.ceil(span / 10))
    for k in range(0, int(span) + 1, step):
        parts.append(f'<text x="{x(k):.1f}" y="{y2 + h2 + 14}" text-anchor="middle">{k}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{y2 + h2 + 27}" '
                 'text-anchor="middle">seconds since the attack started</text>')
    parts.append("</svg>")
    return "\n".join(parts)


# ---------------------------------------------------------------------------- HTML

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.plots { display: flex; flex-wrap: wrap; gap: 1em; }
.pass { color: #1e8449; } .fail { color: #c0392b; font-weight: bold; }
.note { color: #555; font-size: 0.9em; max-width: 60em; }
"""


def _html_table(modes: dict[bool, dict[str, Any]]) -> str:
    heads, rows = _side_by_side(modes)
    head = "".join(f"<th>{html.escape(label)}</th>" for label in heads)
    body = "".join(
        f"<tr><td>{html.escape(label.strip())}</td>"
        + "".join(f"<td>{html.escape(v)}</td>" for v in values) + "</tr>"
        for label, values in rows)
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def render_html(results: Sequence[dict[str, Any]], checks: Iterable[Check] = (),
                notes: Sequence[str] = ()) -> str:
    """The whole report page."""
    by_scenario: dict[str, dict[bool, dict[str, Any]]] = {}
    for r in results:
        by_scenario.setdefault(r["scenario"], {})[bool(r["protected"])] = r
    checks = list(checks)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>floodguard lab report</title>", f"<style>{_STYLE}</style></head><body>",
           "<h1>floodguard lab report</h1>"]
    for note in notes:
        out.append(f'<p class="note">{html.escape(note)}</p>')
    if checks:
        out.append("<h2>Checks</h2><ul>")
        for c in checks:
            mode = "protected" if c.protected else "unprotected"
            cls = "pass" if c.passed else "fail"
            out.append(f'<li class="{cls}">[{"PASS" if c.passed else "FAIL"}] '
                       f"{html.escape(c.scenario)} ({mode}): {html.escape(c.name)} - "
                       f"{html.escape(c.detail)}</li>")
        out.append("</ul>")
    for scenario, modes in by_scenario.items():
        registrar = next(iter(modes.values())).get("registrar", "floodguard")
        out.append(f'<h2 id="{html.escape(scenario)}">{html.escape(scenario)}</h2>')
        out.append(f'<p class="note">{html.escape(description(scenario))}; '
                   f"registrar: {html.escape(str(registrar))}.</p>")
        out.append(_html_table(modes))
        out.append('<div class="plots">')
        for protected, label in MODES:
            if protected in modes and modes[protected].get("timeline"):
                out.append(svg_plot(modes[protected]["timeline"], f"{scenario} - {label}"))
        out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(directory: Path, results: Sequence[dict[str, Any]],
                 checks: Iterable[Check] = (), notes: Sequence[str] = ()) -> Path:
    """Write index.html and results.json into ``directory``; returns the HTML path."""
    directory.mkdir(parents=True, exist_ok=True)
    page = directory / "index.html"
    page.write_text(render_html(results, checks, notes), encoding="utf-8")
    (directory / "results.json").write_text(to_json(results), encoding="utf-8")
    return page
