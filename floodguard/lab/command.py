"""``floodguard lab``: the attack lab as a click command (the main CLI loads it when used).

Runs every chosen scenario protected and unprotected (by default both, side by side), prints
the table (or ``--json``), optionally writes an HTML report, and exits 1 when an acceptance check
failed, 2 on a usage error, 130 when interrupted; an error before any result ends it like every
floodguard command (one line, the code of `floodguard.errors`: 1, 5 for a permission). Also:
``sudo .venv/bin/python -m floodguard.lab.command --scenario all --duration 5``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from floodguard.cli import FloodguardCommand, json_option
from floodguard.durations import Duration
from floodguard.errors import ExitCode
from floodguard.lab.procs import LabError
from floodguard.lab.runner import Lab
from floodguard.lab.scenarios import NAMES as SCENARIOS
from floodguard.lab.settings import REGISTRARS, LabSettings
from floodguard.lab.topology import TopologyError, interrupts_as_exceptions, lab_namespaces

NOTES = (
    "Lab settings: the guard runs with floodguard's defaults (the budget for unknown sources "
    "adapts to the registrar's measured health, starting at 1000/s); only the registrar's "
    "own settings are the lab's (accounts, realm, registrar.time_to_live = 10 s so OPTIONS "
    "liveness shows in a short run). The phones register during a warm-up, so they are "
    "known-good; the fresh-start phones have never been seen.",
    "A registration counts as succeeded when its 200 OK arrives within the registration "
    "timeout (4 s by default) of its first REGISTER, digest challenge and RFC 3261 "
    "retransmissions included. Only registrations started during the measured window count, "
    "and the attack keeps running until all of them have finished.",
    "The registrar is pinned to one CPU and the attackers to another; 'registrar socket "
    "overflows' are datagrams the kernel dropped because the registrar could not keep up.",
)


def _scenarios(values: tuple[str, ...]) -> list[str]:
    chosen: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name == "all":
                chosen += [s for s in SCENARIOS if s not in chosen]
            elif name in SCENARIOS:
                if name not in chosen:
                    chosen.append(name)
            elif name:
                raise click.BadParameter(
                    f"unknown scenario {name!r} (choose from {', '.join(SCENARIOS)}, all)",
                    param_hint="--scenario")
    return chosen or list(SCENARIOS)


@click.command("lab", cls=FloodguardCommand)
@click.option("--scenario", "scenario_args", multiple=True, default=("all",), show_default=True,
              help=f"scenario(s) to run, comma-separated or repeated: {', '.join(SCENARIOS)}, "
                   "all")
@click.option("--duration", type=Duration(minimum=1.0), default=10.0, show_default=True,
              help="measured attack per scenario and mode (seconds, or 30s, 2m)")
@click.option("--unprotected", "only_unprotected", is_flag=True,
              help="run only the unprotected mode (default: both modes side by side)")
@click.option("--protected", "only_protected", is_flag=True,
              help="run only the protected mode")
@json_option
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="also write an HTML report (index.html, results.json) here")
@click.option("--registrar", type=click.Choice(REGISTRARS), default="floodguard",
              show_default=True, help="the registrar behind floodguard")
@click.option("--phones", type=click.IntRange(min=1, max=5000), default=60, show_default=True,
              help="legitimate phones registering and refreshing in every scenario")
@click.option("--storm-phones", type=click.IntRange(min=1, max=20000), default=500,
              show_default=True, help="phones re-registering at once in the storm scenario")
@click.option("--fresh-phones", type=click.IntRange(min=1, max=20000), default=2000,
              show_default=True,
              help="never-seen phones registering at once in the fresh-start scenario")
@click.option("--botnet-sources", type=click.IntRange(min=1, max=130000), default=25000,
              show_default=True, help="spoofed sources in the botnet scenario")
@click.option("--botnet-rate", type=click.FloatRange(min=1.0), default=100000.0,
              show_default=True, help="botnet packets per second, all sources together")
@click.option("--keep", "keep_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="keep configs and logs of every run in this directory")
@click.option("--cleanup", is_flag=True,
              help="only remove namespaces left behind by a lab that was killed, then exit")
def lab_command(scenario_args: tuple[str, ...], duration: float, only_unprotected: bool,
                only_protected: bool, as_json: bool, report_dir: Path | None, registrar: str,
                phones: int, storm_phones: int, fresh_phones: int, botnet_sources: int,
                botnet_rate: float,
                keep_dir: Path | None, cleanup: bool) -> None:
    """Attack lab: build private namespaces, run real attacks against real phones with and
    without floodguard, print what got through. Needs root; touches nothing outside its own
    network namespaces."""
    if cleanup:
        _cleanup()
        return
    if only_protected and only_unprotected:
        raise click.UsageError("--protected and --unprotected exclude each other")
    scenarios = _scenarios(scenario_args)
    modes = [True, False]
    if only_protected:
        modes = [True]
    elif only_unprotected:
        modes = [False]
    if botnet_rate / botnet_sources >= 5.0:
        raise click.BadParameter("each botnet source must stay under 5 REGISTER/s "
                                 "(raise --botnet-sources or lower --botnet-rate)",
                                 param_hint="--botnet-rate")
    settings = LabSettings(duration=duration, phones=phones, storm_phones=storm_phones,
                           fresh_phones=fresh_phones,
                           botnet_sources=botnet_sources, botnet_rate=botnet_rate,
                           registrar=registrar, workdir=keep_dir, keep_workdir=keep_dir is not None)
    results = []

    def progress(message: str) -> None:
        click.echo(f"floodguard lab: {message}", err=True)

    interrupted = False
    try:
        with interrupts_as_exceptions(), Lab(settings, progress=progress) as lab:
            for scenario in scenarios:
                for protected in modes:
                    results.append(lab.run(scenario, protected))
    except KeyboardInterrupt:
        interrupted = True
        progress("interrupted; everything the lab created has been removed")
    except (LabError, TopologyError, OSError) as exc:
        if not results:
            raise  # nothing to show: the error and its exit code, as for every command
        progress(f"error: {' '.join(str(exc).split())}")
    _output(results, as_json=as_json, report_dir=report_dir)
    if interrupted:
        sys.exit(ExitCode.INTERRUPTED)
    from floodguard.lab.stats import checks

    if any(not c.passed for c in checks(results)):
        sys.exit(ExitCode.FAILURE)  # a result: an acceptance check failed


def _output(results: list[dict], *, as_json: bool, report_dir: Path | None) -> None:
    from floodguard.lab import report
    from floodguard.lab.stats import checks

    found = checks(results)
    if as_json:
        click.echo(report.to_json(results))
    elif results:
        click.echo(report.format_table(results, found), nl=False)
    if report_dir is not None and results:
        page = report.write_report(report_dir, results, found, NOTES)
        click.echo(f"floodguard lab: report written to {page}", err=True)


def _cleanup() -> None:
    from floodguard.lab.topology import Topology

    names = lab_namespaces()
    for name in names:
        _, tag, _ = name.split("-", 2)
        Topology(tag=tag).teardown()
    click.echo(f"floodguard lab: removed {len(names)} namespaces" if names
               else "floodguard lab: nothing to remove")


if __name__ == "__main__":
    lab_command(prog_name="floodguard lab")
