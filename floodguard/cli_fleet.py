"""``floodguard fleet status``: the nodes of the fleet, their heartbeats, and the bans in Redis
against this node's kernel set (``fleet.report``). JSON: ``report``'s data as it is.
"""

from __future__ import annotations

import sys

import click

from floodguard import config as configmod
from floodguard.cli import config_option, echo_json, json_option
from floodguard.cli_books import kernel_sets
from floodguard.errors import ExitCode


@click.group("fleet")
def fleet_group() -> None:
    """The fleet: bans and known-good sources shared with other nodes through Redis."""


def _age(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f} s ago"


@fleet_group.command("status")
@config_option
@json_option
def fleet_status(config_path: str | None, as_json: bool) -> None:
    """Nodes seen, their last heartbeat, and bans in Redis vs in this node's set.

    Exit 1 when Redis cannot be reached or this node's link is down, 3 without [fleet].
    """
    from floodguard.fleet import FleetError, report
    from floodguard.store import Store

    cfg = configmod.load(config_path)
    if not cfg.fleet.redis_url:
        raise FleetError("no fleet configured ([fleet] redis_url is empty)")
    store = Store(cfg.state.path)
    sets = kernel_sets(cfg, need_kernel=False)
    try:
        data = report(cfg, store, sets)
    finally:
        store.close()
        if sets is not None:
            sets.close()
    link = data["link"]
    ok = data["redis"]["ok"] and bool(link and link.get("running") and link.get("up"))
    if as_json:
        echo_json(data)
        sys.exit(ExitCode.OK if ok else ExitCode.FAILURE)
    click.echo(f"fleet {data['channel']} at {data['url']}, this node: {data['node']}")
    if link is None:
        click.echo("link: no guard with this config has run the fleet link yet")
    elif not link.get("running"):
        click.echo(f"link: guard not running (last seen {_age(link.get('age'))})")
    elif link.get("up"):
        p99 = link.get("lag", {}).get("p99")
        click.echo(f"link: up; received {link['counts']['received']} changes, pushed "
                   f"{link['counts']['pushed']}; apply lag p99 "
                   + ("-" if p99 is None else f"{p99 * 1000:.0f} ms")
                   + f"; journal backlog {link.get('journal_backlog', 0)}")
    else:
        click.echo(f"link: DOWN since {link.get('down_since')} ({link.get('last_error')}); "
                   "working alone, re-syncs when Redis is back")
    redis = data["redis"]
    if not redis["ok"]:
        click.echo(f"redis: UNREACHABLE: {redis['error']}")
        sys.exit(ExitCode.FAILURE)
    click.echo(f"\n{'node':<24} {'heartbeat':>14} {'bans in set':>12}  state")
    for node in data["nodes"]:
        state = "stopped" if node["stopped"] else ("alive" if node["alive"] else "SILENT")
        mark = " (this node)" if node["node"] == data["node"] else ""
        click.echo(f"{node['node']:<24} {_age(node['age']):>14} "
                   f"{node['bans_set'] if node['bans_set'] is not None else '-':>12}  "
                   f"{state}{mark}")
    local, compare = data["local"], data["compare"]
    here = local["set"] if compare["against"] == "set" else local["store"]
    click.echo(f"\nbans in Redis: {redis['bans']} (+{redis['tombstones']} recent unbans); "
               f"in this node's {'kernel set' if compare['against'] == 'set' else 'store'}: "
               f"{here}")
    click.echo(f"fleet bans missing here: {compare['missing_here']}"
               + (f" (e.g. {', '.join(compare['missing_sample'])})"
                  if compare["missing_sample"] else ""))
    click.echo(f"fleet bans this node's allow list overrides: {compare['allow_listed']}"
               + (f" (e.g. {', '.join(compare['allow_listed_sample'])})"
                  if compare["allow_listed_sample"] else ""))
    click.echo(f"bans only here (not in Redis): {compare['only_here']}")
    click.echo(f"run-time allow-list entries in Redis: {redis['allow_entries']} "
               "(floodguard allow list shows this node's)")
    sys.exit(ExitCode.OK if ok else ExitCode.FAILURE)
