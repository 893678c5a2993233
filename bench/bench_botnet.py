"""Phones' registration success and the registrar's CPU under each spoofed-botnet variant, for
every defence, Kamailio and floodguard's own registrar, side by side in one run.

    sudo .venv/bin/python bench/bench_botnet.py [--quick] [--repeat N] [--json FILE]

Each cell is one ``floodguard lab`` run (``floodguard.lab.runner.Lab``) of a botnet variant
(``scenarios.BOTNET_VARIANTS``: bogus credentials, no credentials, OPTIONS, random junk) with
one defence (``baselines.DEFENCES``):

- ``none``: the registrar alone;
- ``guides``: the four iptables rules of the usual VoIP hardening guides (scanner strings,
  REGISTER and all-SIP hashlimits per source);
- ``floodguard``: floodguard with its default config;
- ``drop-spoofed``: the kernel drops every botnet address first (the lab knows them; no real
  defence can): the physical best on this machine.

The botnet sends as fast as its sender reaches here (``--rate 0``: unpaced, one CPU) from
25,000 spoofed sources; the achieved rate is reported. A cell shows the phones' success (%) and
the registrar's CPU (% of one CPU); the ratio columns divide each by the best case's, measured
in the same run. ``--repeat N`` runs every cell N times and shows the minimum and maximum: the
machine is shared and numbers are noisy. Each cell also shows the phones' registrations in all
(summed over repeats) and what they prove: the one-sided 95 % lower bound of the success share
(Wilson score). A claim of 99.9 % needs about 3,000 registrations without a failure, e.g.
``--defences floodguard --phones 300 --duration 30``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from floodguard.lab.baselines import DEFENCES
from floodguard.lab.runner import Lab, LabSettings
from floodguard.lab.scenarios import BOTNET_VARIANTS
from floodguard.lab.settings import REGISTRARS

VARIANTS = tuple(name for name, _, _ in BOTNET_VARIANTS)
BEST = "drop-spoofed"


def run_registrar(registrar: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every variant x defence (x repeat) against one registrar, in one lab."""
    settings = LabSettings(duration=args.duration, registrar=registrar, botnet_rate=args.rate,
                           botnet_sources=args.sources, phones=args.phones, fresh_phones=0,
                           storm_phones=0)
    rows: list[dict[str, Any]] = []

    def progress(message: str) -> None:
        if args.verbose:
            print(f"bench_botnet: {message}", file=sys.stderr, flush=True)

    with Lab(settings, progress=progress) as lab:
        for repeat in range(args.repeat):
            for variant in args.variants:
                for defence in args.defences:
                    r = lab.run(variant, defence=defence)
                    bot = (r.get("attack") or {}).get("botnet") or {}
                    row = {"registrar": registrar, "variant": variant, "defence": defence,
                           "repeat": repeat, "success_pct": r["legit_success_pct"],
                           "attempted": r["legit_attempted"],
                           "succeeded": r["legit_succeeded"],
                           "outcomes": r["legit_outcomes"],
                           "registrar_cpu_pct": r["registrar_cpu_pct"],
                           "guard_cpu_pct": r.get("guard_cpu_pct"),
                           "bot_rate": bot.get("rate"), "attack_sent": r["attack_sent"],
                           "reached": r["attack_reached_registrar"],
                           "socket_drops": r["registrar_socket_drops"],
                           "kernel_by_rule": r["attack_dropped_kernel_by_rule"],
                           "guard_by_reason": r["attack_dropped_guard_by_reason"]}
                    rows.append(row)
                    print(f"bench_botnet: {registrar:10} {variant:15} {defence:13} "
                          f"phones {row['succeeded']}/{row['attempted']} "
                          f"({row['success_pct']}%), registrar CPU "
                          f"{row['registrar_cpu_pct']}%, bot {row['bot_rate']}/s, "
                          f"reached {row['reached']}", file=sys.stderr, flush=True)
    return rows


def _cell(rows: list[dict[str, Any]], key: str) -> tuple[float, float, float] | None:
    """(median, min, max) of a column over the repeats; None when nothing was measured."""
    values = [float(r[key]) for r in rows if r.get(key) is not None]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def _fmt(cell: tuple[float, float, float] | None, digits: int = 1) -> str:
    if cell is None:
        return "-"
    mid, low, high = cell
    if high - low < 10 ** -digits:
        return f"{mid:.{digits}f}"
    return f"{mid:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"


def _ratio(value: tuple[float, float, float] | None,
           best: tuple[float, float, float] | None) -> str:
    if value is None or best is None or not best[0]:
        return "-"
    return f"{value[0] / best[0]:.2f}"


def lower_bound(succeeded: int, attempted: int, z: float = 1.645) -> float | None:
    """The one-sided 95 % lower confidence bound of the success share (Wilson score, in %):
    what a cell proves, as 200 of 200 phones only proves about 98.7 %."""
    if attempted <= 0:
        return None
    p = succeeded / attempted
    denom = 1 + z * z / attempted
    centre = p + z * z / (2 * attempted)
    spread = z * math.sqrt(p * (1 - p) / attempted + z * z / (4 * attempted * attempted))
    return 100.0 * (centre - spread) / denom


def table(rows: list[dict[str, Any]], registrars: list[str], variants: list[str],
          defences: list[str]) -> str:
    """The text table: per registrar and variant, one line per defence."""
    out = []
    header = (f"{'registrar':10} {'variant':15} {'defence':13} {'phones ok %':>22} "
              f"{'ok/attempts':>13} {'>= % (95%)':>10} "
              f"{'x best':>6} {'registrar CPU %':>20} {'x best':>6} {'bot pkts/s':>12}")
    out += [header, "-" * len(header)]
    for registrar in registrars:
        for variant in variants:
            mine = [r for r in rows if r["registrar"] == registrar and r["variant"] == variant]
            best = [r for r in mine if r["defence"] == BEST]
            best_ok, best_cpu = _cell(best, "success_pct"), _cell(best, "registrar_cpu_pct")
            for defence in defences:
                cells = [r for r in mine if r["defence"] == defence]
                if not cells:
                    continue
                ok, cpu = _cell(cells, "success_pct"), _cell(cells, "registrar_cpu_pct")
                rate = _cell(cells, "bot_rate")
                succeeded = sum(int(r["succeeded"]) for r in cells)
                attempted = sum(int(r["attempted"]) for r in cells)
                low = lower_bound(succeeded, attempted)
                out.append(f"{registrar:10} {variant:15} {defence:13} {_fmt(ok, 2):>22} "
                           f"{f'{succeeded}/{attempted}':>13} "
                           f"{'-' if low is None else f'{low:.2f}':>10} "
                           f"{_ratio(ok, best_ok):>6} {_fmt(cpu):>20} "
                           f"{_ratio(cpu, best_cpu):>6} "
                           f"{'-' if rate is None else f'{rate[0]:,.0f}':>12}")
            out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="4 s of measured attack per cell instead of 10")
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds of measured attack per cell")
    ap.add_argument("--repeat", type=int, default=1, help="runs per cell (min-max shown)")
    ap.add_argument("--registrar", choices=[*REGISTRARS, "both"], default="both")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--defences", default=",".join(DEFENCES))
    ap.add_argument("--rate", type=float, default=0.0,
                    help="botnet packets/s in all (0: as fast as the sender reaches)")
    ap.add_argument("--sources", type=int, default=25000, help="spoofed sources")
    ap.add_argument("--phones", type=int, default=60)
    ap.add_argument("--json", type=Path, default=None, help="write every run's row here")
    ap.add_argument("-v", "--verbose", action="store_true", help="the lab's progress too")
    args = ap.parse_args(argv)
    if args.duration is None:
        args.duration = 4.0 if args.quick else 10.0
    args.variants = [v for v in args.variants.split(",") if v]
    args.defences = [d for d in args.defences.split(",") if d]
    for v in args.variants:
        if v not in VARIANTS:
            ap.error(f"unknown variant {v!r} (choose from {', '.join(VARIANTS)})")
    for d in args.defences:
        if d not in DEFENCES:
            ap.error(f"unknown defence {d!r} (choose from {', '.join(DEFENCES)})")
    registrars = list(REGISTRARS) if args.registrar == "both" else [args.registrar]
    began = time.monotonic()
    rows: list[dict[str, Any]] = []
    for registrar in registrars:
        rows += run_registrar(registrar, args)
        if args.json is not None:  # what is done so far survives a later failure
            args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    print(table(rows, registrars, args.variants, args.defences))
    print(f"{len(rows)} runs, {args.duration:g} s of attack each, "
          f"{time.monotonic() - began:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
