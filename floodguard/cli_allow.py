"""``floodguard allow add|remove|list``: the run-time allow list (``allows.AllowBook``), next to
the config's static ``blacklist.allow``; persisted in the state store, shared by the fleet, in
the kernel allow set, honoured by a running guard within a second.

JSON shapes (``--json``):

* ``add``: {"network", "reason", "created", "until", "remaining", "lifted": [sources whose
  bans, suspensions or lockdowns it lifted]} (``until``/``remaining`` null: until removed).
* ``remove``: {"removed": [networks], "not_allowed": [networks that had no run-time entry]}.
* ``list``: a list of {"network", "reason", "created", "until", "remaining", "source"},
  ``source`` being "runtime" or "config".
"""

from __future__ import annotations

import time

import click

from floodguard import cli_books
from floodguard import config as configmod
from floodguard.cli import config_option, echo_json, json_option
from floodguard.durations import HELP, Duration


def _networks(_ctx: click.Context, _param: click.Parameter,
              values: tuple[str, ...]) -> tuple[str, ...]:
    from floodguard import allows
    from floodguard.bans import BanError

    try:
        return tuple(allows.canonical(value) for value in values)
    except BanError as exc:
        raise click.BadParameter(str(exc)) from None


networks_argument = click.argument("networks", nargs=-1, required=True, callback=_networks,
                                   metavar="IP|CIDR...")


def _left(seconds: float | None) -> str:
    return "until removed" if seconds is None else f"{int(seconds)} s"


@click.group("allow")
def allow_group() -> None:
    """The run-time allow list: sources never limited nor banned (with the config's list)."""


@allow_group.command("add")
@config_option
@networks_argument
@click.option("--ttl", type=Duration(minimum=1, whole=True), default=None,
              help=f"how long ({HELP}; default: until removed)")
@click.option("--reason", default="manual", show_default=True)
@json_option
def allow_add(config_path: str | None, networks: tuple[str, ...], ttl: int | None,
              reason: str, as_json: bool) -> None:
    """Allow each IP or CIDR (kernel set at once; the fleet and a running guard follow); lifts
    the bans, suspensions and lockdowns of the sources it covers."""
    cfg = configmod.load(config_path)
    book = cli_books.allow_book(cfg, need_kernel=True)
    now = time.time()
    out = []
    for net in networks:
        row, lifted = book.add(net, ttl, reason)
        out.append({**row.as_dict(now), "lifted": lifted})
    if as_json:
        echo_json(out[0] if len(out) == 1 else out)
        return
    for entry in out:
        lifted = f"; lifted {', '.join(entry['lifted'])}" if entry["lifted"] else ""
        click.echo(f"allowed {entry['network']} {_left(entry['remaining'])} "
                   f"({entry['reason']}){lifted}")


@allow_group.command("remove")
@config_option
@networks_argument
@json_option
def allow_remove(config_path: str | None, networks: tuple[str, ...], as_json: bool) -> None:
    """End the run-time allow of each IP or CIDR (the config's list is not touched)."""
    cfg = configmod.load(config_path)
    book = cli_books.allow_book(cfg, need_kernel=True)
    removed, missing = [], []
    for net in networks:
        (removed if book.remove(net) else missing).append(net)
    if as_json:
        echo_json({"removed": removed, "not_allowed": missing})
        return
    for net in removed:
        click.echo(f"removed {net} from the allow list")
    for net in missing:
        click.echo(f"{net} was not on the run-time allow list")


@allow_group.command("list")
@config_option
@json_option
def allow_list(config_path: str | None, as_json: bool) -> None:
    """List the run-time allow list with time left, then the config's static entries."""
    cfg = configmod.load(config_path)
    book = cli_books.allow_book(cfg, need_kernel=False)
    rows = book.list()
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo("no allow-list entries")
        return
    click.echo(f"{'network':<44} {'source':<8} {'left':>14}  reason")
    for row in rows:
        click.echo(f"{row['network']:<44} {row['source']:<8} {_left(row['remaining']):>14}  "
                   f"{row['reason']}")
