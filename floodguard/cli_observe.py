"""``floodguard status`` (one screen of rates, bans, offenders and health; ``--watch``) and
``floodguard replay`` (the policy over a capture, offline). JSON: ``status.collect``'s data with
``rates``, and ``ReplayReport.as_dict``.
"""

from __future__ import annotations

import sys

import click

from floodguard import config as configmod
from floodguard import durations
from floodguard.cli import config_option, echo_json, error_code, fail, json_option, one_line
from floodguard.durations import Duration
from floodguard.errors import ExitCode


@click.command("replay")
@config_option
@click.argument("pcap", type=click.Path(dir_okay=False))
@json_option
def replay_cmd(config_path: str | None, pcap: str, as_json: bool) -> None:
    """Run the policy over a capture (pcap or pcapng) offline: what would have been banned,
    when, and why.

    Exit 4 when PCAP cannot be read, is not a pcap or pcapng file, or is corrupt. A capture cut
    short is replayed up to the cut, with a warning.
    """
    import time

    from floodguard.replay import replay

    cfg = configmod.load(config_path)
    report = replay(cfg, pcap)
    if report.truncated:
        click.echo(f"warning: {pcap}: {report.truncated}", err=True)
    if as_json:
        echo_json(report.as_dict())
        return
    span = (report.last or 0) - (report.first or 0)
    click.echo(f"{pcap}: {report.packets} packets, {report.sip_packets} judged, {span:.1f} s")
    if not report.decisions:
        click.echo("nothing would have been banned")
    for d in report.decisions:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.at))
        aor = f" {d.aor}" if d.aor else ""
        click.echo(f"{stamp} (+{d.offset:.3f} s) {d.kind:<9} {d.ip} for {d.seconds} s: "
                   f"{d.reason}, {d.failures} failures{aor}")
    drops = {k: v for k, v in sorted(report.verdicts.items()) if k.startswith("drop:")}
    if drops:
        click.echo("would drop: " + ", ".join(f"{k[5:]} {v}" for k, v in drops.items()))


@click.command("status")
@config_option
@json_option
@click.option("--watch", is_flag=True, help="refresh live until Ctrl-C")
@click.option("--interval", type=Duration(minimum=0.1), default=1.0, show_default=True,
              help=f"time between samples for the rates ({durations.HELP})")
def status_cmd(config_path: str | None, as_json: bool, watch: bool, interval: float) -> None:
    """One screen: packets/s per layer, bans, top offenders, registrations, health.

    Exit 1 when the health section lists a problem (or the state cannot be read).
    """
    import time

    from floodguard import status
    from floodguard.status_view import render

    cfg = configmod.load(config_path)
    try:
        before = status.collect(cfg)
        time.sleep(max(0.1, interval))
        after = status.collect(cfg)
    except Exception as exc:  # a one-line error, never a traceback
        if error_code(exc) is not None:
            raise  # its own exit code
        fail(one_line(exc))
    if as_json:
        after["rates"] = status.rates(before, after)
        echo_json(after)
        sys.exit(ExitCode.FAILURE if after["health"] else ExitCode.OK)
    if not watch:
        render(after, status.rates(before, after))
        sys.exit(ExitCode.FAILURE if after["health"] else ExitCode.OK)
    from rich.live import Live

    from floodguard.status_view import build

    with Live(build(after, status.rates(before, after)), refresh_per_second=2) as live:
        try:
            while True:
                time.sleep(max(0.1, interval))
                before, after = after, status.collect(cfg)
                live.update(build(after, status.rates(before, after)))
        except KeyboardInterrupt:
            pass
