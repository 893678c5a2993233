"""``floodguard blacklist list|add|remove|explain``: bans by hand, over the store and the kernel
ban set, whether the guard runs or not (``bans.BanBook``).

JSON shapes (``--json``):

* ``list``: a list of bans, as ``BanView.as_dict`` and endpoint suspensions.
* ``add``: the ban: {"ip", "kind", "reason", "aor", "failures", "created", "until",
  "remaining"}.
* ``remove``: {"removed": [sources lifted], "not_banned": [given addresses with nothing to
  lift]}; with ``--aor``: {"lifted": ["aor from ip" or "aor protection", ...]}.
* ``explain``: {"ip", "allow", "ban", "in_kernel", "kernel_seconds_left", "text"}.
"""

from __future__ import annotations

import time

import click

from floodguard import cli_books
from floodguard import config as configmod
from floodguard.cli import (
    _ip_argument,
    config_option,
    echo_json,
    ip_argument,
    json_option,
)
from floodguard.durations import HELP, Duration


@click.group("blacklist")
def blacklist_group() -> None:
    """List, add, remove and explain bans (store and kernel set, guard running or not)."""


@blacklist_group.command("list")
@config_option
@json_option
def blacklist_list(config_path: str | None, as_json: bool) -> None:
    """List active bans and suspensions (endpoint ones too) with their time left."""
    cfg = configmod.load(config_path)
    book = cli_books.ban_book(cfg, need_kernel=False)
    now = time.time()
    views = book.list()
    # endpoint suspensions (one AOR from one address) live in the guard, not the kernel
    endpoints = [{**row.as_dict(now), "in_kernel": False, "kernel_seconds_left": None}
                 for row in book.store.active_pair_bans(now=now)]
    if as_json:
        echo_json([v.as_dict(now) for v in views] + endpoints)
        return
    if not views and not endpoints:
        click.echo("no active bans")
        return
    click.echo(f"{'source':<40} {'kind':<10} {'left':>7} {'kernel':>6}  reason")
    for v in views:
        d = v.as_dict(now)
        left = d.get("remaining", v.kernel_seconds)
        click.echo(f"{v.ip:<40} {d['kind']:<10} {int(left or 0):>6}s "
                   f"{'yes' if v.kernel_seconds is not None else 'NO':>6}  {d['reason']}"
                   + (f" ({d['aor']})" if d.get("aor") else ""))
    for e in endpoints:
        click.echo(f"{e['ip']:<40} {'endpoint':<10} {int(e['remaining']):>6}s {'-':>6}  "
                   f"{e['reason']} ({e['aor']} only)")


@blacklist_group.command("add")
@config_option
@ip_argument
@click.option("--ttl", type=Duration(minimum=1, whole=True), default=None,
              help=f"how long ({HELP}; default: blacklist.ban_time)")
@click.option("--reason", default="manual", show_default=True)
@json_option
def blacklist_add(config_path: str | None, ip: str, ttl: int | None, reason: str,
                  as_json: bool) -> None:
    """Ban IP by hand (kernel set at once; a running guard follows).

    Exit 4 when IP may not be banned (allow-listed, reserved).
    """
    cfg = configmod.load(config_path)
    book = cli_books.ban_book(cfg, need_kernel=True)
    row = book.add(ip, ttl or cfg.blacklist.ban_time, reason)
    if as_json:
        echo_json(row.as_dict(time.time()))
        return
    click.echo(f"banned {row.ip} for {int(row.until - row.created)} s ({row.reason})")


def _targets(_ctx: click.Context, _param: click.Parameter,
             values: tuple[str, ...]) -> tuple[str, ...]:
    """Addresses (canonical) and CIDR networks (kept as written, checked); a usage error for
    anything else."""
    from floodguard import addr

    out = []
    for value in values:
        if "/" in value:
            try:
                out.append(addr.canonical_network(value))
            except ValueError as exc:
                raise click.BadParameter(str(exc)) from None
        else:
            out.append(_ip_argument(_ctx, _param, value))
    return tuple(out)


def _optional_ip(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    return None if value is None else _ip_argument(ctx, param, value)


@blacklist_group.command("remove")
@config_option
@click.argument("targets", nargs=-1, callback=_targets, metavar="[IP|CIDR]...")
@click.option("--all", "remove_all", is_flag=True,
              help="lift every ban, suspension and lockdown (prints what it lifted)")
@click.option("--aor", default=None, help="lift this account's endpoint suspensions instead "
              "(user or user@domain), from IP or --source only when given; without a "
              "source also the account's protection")
@click.option("--source", default=None, callback=_optional_ip, help="with --aor: this source")
@json_option
def blacklist_remove(config_path: str | None, targets: tuple[str, ...], remove_all: bool,
                     aor: str | None, source: str | None, as_json: bool) -> None:
    """Lift the bans, suspensions and lockdowns of each IP, of every source inside each CIDR
    (an IPv6 source counts by its limits.ipv6_prefix) or of all sources (--all); or with --aor
    one account's endpoint suspensions and protection."""
    given = sum((bool(targets), remove_all, aor is not None))
    if given != 1:
        raise click.UsageError("give IP or CIDR addresses, --all, or --aor user[@domain]")
    if aor is not None and len(targets) > 1:
        raise click.UsageError("--aor takes at most one IP")
    cfg = configmod.load(config_path)
    book = cli_books.ban_book(cfg, need_kernel=aor is None)
    if aor is not None:
        lifted = book.remove_endpoint(aor, source or (targets[0] if targets else None))
        if as_json:
            echo_json({"lifted": lifted})
            return
        click.echo("\n".join(f"lifted {x}" for x in lifted) if lifted
                   else f"{aor} has no endpoint suspension nor protection")
        return
    removed: list[str] = []
    not_banned: list[str] = []
    for target in targets or (None,):
        if target is None or "/" in target:
            lifted = book.remove_network(target)
        else:
            lifted = [book.key(target)] if book.remove(target) else []
        removed += [ip for ip in lifted if ip not in removed]
        if target is not None and not lifted:
            not_banned.append(target)
    if as_json:
        echo_json({"removed": removed, "not_banned": not_banned})
        return
    for ip in removed:
        click.echo(f"removed {ip}")
    for target in not_banned:
        click.echo(f"{target} was not banned")
    if remove_all and not removed:
        click.echo("no active bans")


@blacklist_group.command("explain")
@config_option
@ip_argument
@json_option
def blacklist_explain(config_path: str | None, ip: str, as_json: bool) -> None:
    """Say why IP is banned and until when."""
    cfg = configmod.load(config_path)
    book = cli_books.ban_book(cfg, need_kernel=False)
    if as_json:
        echo_json(book.explain_data(ip))
        return
    click.echo(book.explain(ip))
