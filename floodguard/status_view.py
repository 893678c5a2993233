"""The ``floodguard status`` screen, drawn with rich from a status snapshot."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table


def _layers(rates: dict[str, float], data: dict[str, Any]) -> Table:
    table = Table(title="packets/s per layer", expand=True)
    table.add_column("layer")
    table.add_column("/s", justify="right")
    table.add_column("total", justify="right")
    drops = data["kernel"].get("drops", {})
    for layer in sorted(drops):
        table.add_row(f"kernel drop: {layer}", f"{rates.get('kernel:' + layer, 0):.1f}",
                      str(drops[layer]))
    table.add_row("kernel → guard queue", f"{rates.get('kernel:queued', 0):.1f}",
                  str(data["kernel"].get("queued", 0)))
    for key, value in sorted(data["guard"]["verdicts"].items()):
        table.add_row(f"guard {key}", f"{rates.get('guard:' + key, 0):.1f}", str(value))
    return table


def _bans(data: dict[str, Any]) -> Table:
    table = Table(title=f"bans and suspensions ({len(data['bans'])})", expand=True)
    for column in ("source", "kind", "left", "reason", "aor"):
        table.add_column(column)
    for ban in data["bans"][:15]:
        table.add_row(ban["ip"], ban["kind"], f"{int(ban['remaining'])} s", ban["reason"],
                      ban["aor"] or "")
    return table


def _offenders(data: dict[str, Any]) -> Table:
    table = Table(title="top offending sources / AORs", expand=True)
    table.add_column("source")
    table.add_column("dropped", justify="right")
    table.add_column("aor")
    table.add_column("bans", justify="right")
    sources, aors = data["guard"]["top_sources"], data["top_aors"]
    for i in range(max(len(sources), len(aors), 1)):
        s = sources[i] if i < len(sources) else {"ip": "", "dropped": ""}
        a = aors[i] if i < len(aors) else {"aor": "", "bans": ""}
        table.add_row(s["ip"], str(s["dropped"]), a["aor"], str(a["bans"]))
    return table


def _health(data: dict[str, Any]) -> Panel:
    regs = data["registrations"]
    lines = [f"mode: {data['mode']}",
             f"rules: {'installed' if data['kernel'].get('installed') else 'MISSING'}",
             "guard workers: " + (", ".join(
                 f"{w['name']} {'up' if w['alive'] else 'DOWN'}" for w in data["guard"]["workers"])
                 or "none")]
    if regs is not None:
        lines.append(f"registrations: {regs['bindings']} ({regs['online']} online, "
                     f"{regs['offline']} offline)")
    admission = data.get("admission")
    if admission is not None:
        lines.append(f"admission of unknown sources: {admission['rate']}/s "
                     f"({admission.get('reason', '?')})")
    for row in data["kernel"].get("sets", []):
        lines.append(f"set {row['name']}: {row['entries']}/{row['maxelem']}")
    for table in data["kernel"].get("hashlimits", []):
        if table["capacity"]:  # the shared tables hold one bucket
            lines.append(f"hashlimit {table['name']} (IPv{table['family']}, {table['purpose']}): "
                         f"{table['entries']}/{table['capacity']}")
    tracked = data["kernel"].get("conntrack")
    if tracked:
        lines.append(f"conntrack: {tracked['entries']}/{tracked['capacity']}")
    lines += [f"[red]PROBLEM: {p}[/red]" for p in data["health"]] or ["[green]healthy[/green]"]
    lines += [f"[yellow]note: {n}[/yellow]" for n in data.get("notes", [])]
    return Panel("\n".join(lines), title="health")


def build(data: dict[str, Any], rates: dict[str, float]) -> Group:
    return Group(_health(data), _layers(rates, data), _bans(data), _offenders(data))


def render(data: dict[str, Any], rates: dict[str, float]) -> None:
    Console().print(build(data, rates))
