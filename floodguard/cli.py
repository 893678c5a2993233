"""Command-line entry points (click): ``floodguard config|apply|remove|show|run|...``.

Errors end a command in one place: `ErrorMapping.invoke` (the ``floodguard`` group, and the
subsystem commands that also run on their own) turns a `FloodguardError` or an OSError into a
one-line message on stderr and the error's exit code (`floodguard.errors`); commands do not
catch errors to pick codes. Commands whose exit status is a result (``show``, ``status``,
``fleet status``, ``lab``) still exit 1 for "not good" themselves.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Mapping
from typing import Any, NoReturn

import click

from floodguard import __version__, addr
from floodguard import config as configmod
from floodguard.bans import BanBook
from floodguard.errors import EXIT_CODES, ExitCode, exit_code_of

CONFIG_HELP = f"config file (default: ${configmod.ENV_VAR} or {configmod.DEFAULT_PATH})"


def _exit_code_table() -> str:
    """The exit codes for the ``--help`` epilog (``\\b``: click keeps the lines as they are)."""
    lines = ["\b", "Exit codes:"]
    for code, text in EXIT_CODES:
        wrapped = textwrap.wrap(text, 66)
        lines.append(f"  {int(code):<3}  {wrapped[0]}")
        lines += [f"{'':7}{more}" for more in wrapped[1:]]
    return "\n".join(lines)


EPILOG = _exit_code_table()

# Subsystem commands, imported when used (they import this module for its helpers).
SUBSYSTEM_COMMANDS = {
    "registrar": "floodguard.registrar.commands:registrar_command",
    "endpoints": "floodguard.registrar.commands:endpoints_command",
    "lab": "floodguard.lab.command:lab_command",
    "explain": "floodguard.explain:explain_command",
}


def fail(message: str, code: int = ExitCode.FAILURE) -> NoReturn:
    """Print a one-line error (no traceback) and exit."""
    click.echo(f"floodguard: {message}", err=True)
    sys.exit(int(code))


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


def error_code(exc: BaseException) -> int | None:
    """The exit code a command ends with for exc, None for a bug (it keeps its traceback)."""
    return exit_code_of(exc)


def report_error(exc: BaseException, code: int) -> NoReturn:
    """End the command: the error on stderr (a config error: every problem, one per line)."""
    if isinstance(exc, configmod.ConfigError):
        for line in exc.errors:
            click.echo(line, err=True)
        sys.exit(int(code))
    fail(_one_line(exc), code)


class ErrorMapping:
    """Mixin for click commands: the one place errors become a message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except Exception as exc:
            code = error_code(exc)
            if code is None:
                raise
            report_error(exc, code)


class FloodguardCommand(ErrorMapping, click.Command):
    """A command that maps floodguard errors to exit codes (for commands run on their own)."""


class FloodguardGroup(ErrorMapping, click.Group):
    """A group that maps its subcommands' errors to exit codes and loads ``lazy`` commands
    ({name: "module:attribute"}) when they are used."""

    def __init__(self, *args: Any, lazy: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            module, _, attribute = self.lazy[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)


def _ip_argument(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    """An address argument in canonical form (``::ffff:a.b.c.d`` is IPv4); a usage error (2)
    if it is not an address."""
    try:
        return addr.canonical(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


ip_argument = click.argument("ip", callback=_ip_argument)

config_option = click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help=CONFIG_HELP,
)


@click.group(cls=FloodguardGroup, lazy=SUBSYSTEM_COMMANDS, epilog=EPILOG,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="floodguard")
def main() -> None:
    """floodguard: keeps SIP registrars alive under registration floods and brute force."""


@main.group("config")
def config_group() -> None:
    """Check or show the configuration."""


@config_group.command("check")
@config_option
def config_check(config_path: str | None) -> None:
    """Exit 0 when the config is valid, 3 with every error when not."""
    cfg = configmod.load(config_path)
    click.echo(f"{cfg.source or 'built-in defaults'}: OK")


@config_group.command("show")
@config_option
def config_show(config_path: str | None) -> None:
    """Print the effective configuration as TOML."""
    cfg = configmod.load(config_path)
    click.echo(f"# effective configuration from {cfg.source or 'built-in defaults'}")
    click.echo(configmod.dumps(cfg, redact=True), nl=False)


# ---------------------------------------------------------------- kernel: apply / remove / show

backend_option = click.option(
    "--backend", type=click.Choice(["auto", "legacy", "nft"]), default="auto", show_default=True,
    help="iptables backend: auto asks `iptables -V`; never mix both on one host",
)


def _saved_entries(cfg: configmod.Config) -> list[tuple[str, str, float]]:
    """Bans and known sources from the state store, to reload into the sets (e.g. at boot)."""
    import sqlite3
    from pathlib import Path

    path = Path(cfg.state.path)
    if not path.is_file():
        return []
    from floodguard.rulekeeper import saved_entries
    from floodguard.store import Store, StoreError

    # A damaged state file must never stop the firewall from coming up at boot.
    try:
        store = Store(path)
        try:
            entries = saved_entries(store)
        finally:
            store.close()
    except (StoreError, sqlite3.Error) as exc:
        click.echo(f"floodguard: warning: state not restored: {_one_line(exc)}", err=True)
        return []
    return entries


def _admitted(cfg: configmod.Config) -> configmod.Config:
    """``cfg`` with the unknown-source budget the admission controller reached (recorded in the
    state store), or its start rate; static admission: ``cfg`` itself."""
    import sqlite3
    from pathlib import Path

    from floodguard import admission_control
    from floodguard.store import Store, StoreError

    if Path(cfg.state.path).is_file():
        try:
            store = Store(cfg.state.path)
            try:
                return admission_control.applied_config(store, cfg)
            finally:
                store.close()
        except (StoreError, sqlite3.Error, OSError):
            pass  # a damaged or unreadable state file: the start rate, as on a fresh host
    return admission_control.effective(cfg, admission_control.start_rate(cfg))


@main.command("apply")
@config_option
@click.option("--dry-run", is_flag=True,
              help="print exactly what would be installed and change nothing (no root needed)")
@backend_option
def apply_cmd(config_path: str | None, dry_run: bool, backend: str) -> None:
    """Install or update the kernel rules and ipsets (atomic, idempotent, IPv4 and IPv6)."""
    from floodguard.kernel import rules

    cfg = _admitted(configmod.load(config_path))
    ruleset = rules.render(cfg)
    if dry_run:
        click.echo(rules.dry_run_text(ruleset, cfg.source), nl=False)
        return
    from floodguard.kernel import firewall

    firewall.require_root()
    from floodguard import rulekeeper  # the guard's rule keeper keeps what was applied last

    with rulekeeper.exclusive(cfg):
        report = firewall.apply(cfg, backend, ruleset=ruleset, saved_entries=_saved_entries(cfg))
        report.warnings += filter(None, [rulekeeper.record(cfg, report.backend)])
    for warning in report.warnings:
        click.echo(f"floodguard: warning: {warning}", err=True)
    parts = []
    if report.changed_tables:
        parts.append("updated " + ", ".join(report.changed_tables))
    if report.created_sets:
        parts.append("created sets " + ", ".join(report.created_sets))
    if report.allow_added or report.allow_removed:
        parts.append(f"allow list +{len(report.allow_added)} -{len(report.allow_removed)}")
    if report.restored is not None and report.restored.loaded:
        parts.append(f"restored {report.restored.loaded} set entries from the state store")
    if report.restored is not None and report.restored.full:
        click.echo(f"floodguard: warning: {report.restored.full} saved entries not restored: "
                   "set full", err=True)
    click.echo(f"floodguard: applied ({report.backend} backend): "
               + ("; ".join(parts) if parts else "already up to date"))


@main.command("remove")
@config_option
@backend_option
def remove_cmd(config_path: str | None, backend: str) -> None:
    """Remove floodguard's chains, jumps and ipsets; leave every other rule untouched."""
    from floodguard.kernel import firewall

    cfg = configmod.load(config_path)
    firewall.require_root()
    from floodguard import rulekeeper  # and never brings back what was removed

    with rulekeeper.exclusive(cfg):
        if (warning := rulekeeper.record(cfg, None)) is not None:
            click.echo(f"floodguard: warning: {warning}", err=True)
        report = firewall.remove(cfg, backend)
    parts = []
    if report.tables:
        parts.append(f"removed rules from {', '.join(report.tables)} "
                     f"({'/'.join(report.backends)} backend)")
    if report.destroyed_sets:
        parts.append(f"destroyed {len(report.destroyed_sets)} sets")
    click.echo("floodguard: " + ("; ".join(parts) if parts else "nothing to remove"))


@main.command("show")
@config_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@backend_option
def show_cmd(config_path: str | None, as_json: bool, backend: str) -> None:
    """Show floodguard's rules with packet/byte counters and the ipset sizes.

    Exit 1 when the rules are not installed.
    """
    import json

    from floodguard.kernel import firewall

    cfg = configmod.load(config_path)
    firewall.require_root()
    data = firewall.status(cfg, backend)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        state = "installed" if data["installed"] else "NOT installed (run floodguard apply)"
        click.echo(f"floodguard rules: {state}; backend {data['backend']}")
        current = None
        for row in data["rules"]:
            where = (row["family"], row["table"], row["chain"])
            if where != current:
                current = where
                click.echo(f"\nIPv{row['family']} {row['table']} {row['chain']}")
                click.echo(f"{'packets':>12} {'bytes':>14}  rule")
            click.echo(f"{row['packets']:>12} {row['bytes']:>14}  {row['rule']}")
        click.echo("\nsets")
        if not data["sets"]:
            click.echo("  (none)")
        for row in data["sets"]:
            click.echo(f"  {row['name']:<22} {row['entries']:>9} / {row['maxelem']:<9} "
                       f"{row['type']}")
    if not data["installed"]:
        sys.exit(ExitCode.FAILURE)  # a result: the rules are not installed


# ---------------------------------------------------------------- guard: run / blacklist


@main.command("run")
@config_option
@click.option("--monitor", is_flag=True,
              help="the guard, its feeds and fleet link log would_* events and ban nothing "
                   '(as [guard] mode = "monitor"); the kernel rules follow the config file')
def run_cmd(config_path: str | None, monitor: bool) -> None:
    """Run the guard: consume the NFQUEUE(s), enforce the policy, push bans into the kernel."""
    from floodguard import daemon
    from floodguard.kernel import firewall
    from floodguard.store import Store

    cfg = configmod.load(config_path)
    firewall.require_root()
    Store(cfg.state.path).close()
    sys.exit(daemon.supervise(cfg, force_monitor=monitor))


def _ban_book(cfg: configmod.Config, need_kernel: bool) -> BanBook:
    from floodguard.kernel import KernelError, firewall
    from floodguard.store import Store

    sets = None
    store = Store(cfg.state.path)
    try:
        firewall.require_root()
        from floodguard.kernel.ipset import SetManager
        from floodguard.kernel.rules import render

        sets = SetManager(render(cfg).sets)
        if need_kernel:
            sets.ensure()
    except (KernelError, OSError) as exc:
        if need_kernel:
            raise
        click.echo(f"floodguard: warning: kernel sets not read: {_one_line(exc)}", err=True)
    return BanBook(cfg, store, sets)


@main.group("blacklist")
def blacklist_group() -> None:
    """List, add, remove and explain bans (store and kernel set, guard running or not)."""


@blacklist_group.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def blacklist_list(config_path: str | None, as_json: bool) -> None:
    """List active bans and suspensions (endpoint ones too) with their time left."""
    import json
    import time

    cfg = configmod.load(config_path)
    book = _ban_book(cfg, need_kernel=False)
    now = time.time()
    views = book.list()
    # endpoint suspensions (one AOR from one address) live in the guard, not the kernel
    endpoints = [{**row.as_dict(now), "in_kernel": False, "kernel_seconds_left": None}
                 for row in book.store.active_pair_bans(now=now)]
    if as_json:
        click.echo(json.dumps([v.as_dict(now) for v in views] + endpoints, indent=2))
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
@click.option("--ttl", type=int, default=None, help="seconds (default: blacklist.ban_time)")
@click.option("--reason", default="manual", show_default=True)
def blacklist_add(config_path: str | None, ip: str, ttl: int | None, reason: str) -> None:
    """Ban IP by hand (kernel set at once; a running guard follows).

    Exit 4 when IP may not be banned (allow-listed, reserved) or --ttl is bad.
    """
    cfg = configmod.load(config_path)
    book = _ban_book(cfg, need_kernel=True)
    row = book.add(ip, ttl or cfg.blacklist.ban_time, reason)
    click.echo(f"banned {row.ip} for {int(row.until - row.created)} s ({row.reason})")


def _optional_ip(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    return None if value is None else _ip_argument(ctx, param, value)


@blacklist_group.command("remove")
@config_option
@click.argument("ip", required=False, callback=_optional_ip)
@click.option("--aor", default=None, help="lift this account's endpoint suspensions instead "
              "(user or user@domain), from IP or --source only when given; without a "
              "source also the account's protection")
@click.option("--source", default=None, callback=_optional_ip, help="with --aor: this source")
def blacklist_remove(config_path: str | None, ip: str | None, aor: str | None,
                     source: str | None) -> None:
    """Lift a ban, suspension or lockdown on IP (and its endpoint suspensions), or with --aor
    one account's endpoint suspensions and protection."""
    cfg = configmod.load(config_path)
    if aor is None and ip is None:
        raise click.UsageError("give an IP address, or --aor user[@domain]")
    book = _ban_book(cfg, need_kernel=aor is None)
    if aor is not None:
        lifted = book.remove_endpoint(aor, source or ip)
        click.echo("\n".join(f"lifted {x}" for x in lifted) if lifted
                   else f"{aor} has no endpoint suspension nor protection")
        return
    assert ip is not None
    found = book.remove(ip)
    click.echo(f"removed {ip}" if found else f"{ip} was not banned")


@blacklist_group.command("explain")
@config_option
@ip_argument
def blacklist_explain(config_path: str | None, ip: str) -> None:
    """Say why IP is banned and until when."""
    cfg = configmod.load(config_path)
    book = _ban_book(cfg, need_kernel=False)
    click.echo(book.explain(ip))


@main.command("replay")
@config_option
@click.argument("pcap", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def replay_cmd(config_path: str | None, pcap: str, as_json: bool) -> None:
    """Run the policy over a capture offline: what would have been banned, when, and why.

    Exit 4 when PCAP cannot be read or is not a pcap file.
    """
    import json
    import time

    from floodguard.replay import replay

    cfg = configmod.load(config_path)
    report = replay(cfg, pcap)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
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


@main.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--watch", is_flag=True, help="refresh live until Ctrl-C")
@click.option("--interval", type=float, default=1.0, show_default=True,
              help="seconds between samples for the rates")
def status_cmd(config_path: str | None, as_json: bool, watch: bool, interval: float) -> None:
    """One screen: packets/s per layer, bans, top offenders, registrations, health.

    Exit 1 when the health section lists a problem (or the state cannot be read).
    """
    import json
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
        fail(_one_line(exc))
    if as_json:
        after["rates"] = status.rates(before, after)
        click.echo(json.dumps(after, indent=2, default=str))
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


# ---------------------------------------------------------------- fleet


@main.group("fleet")
def fleet_group() -> None:
    """The fleet: bans and known-good sources shared with other nodes through Redis."""


def _fleet_sets(cfg: configmod.Config) -> object | None:
    """This node's kernel sets when readable (root), else None (the store is compared)."""
    from floodguard.kernel import KernelError, firewall

    try:
        firewall.require_root()
        from floodguard.kernel.ipset import SetManager
        from floodguard.kernel.rules import render

        return SetManager(render(cfg).sets)
    except (KernelError, OSError) as exc:
        click.echo(f"floodguard: warning: kernel sets not read: {_one_line(exc)}", err=True)
        return None


def _age(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f} s ago"


@fleet_group.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def fleet_status(config_path: str | None, as_json: bool) -> None:
    """Nodes seen, their last heartbeat, and bans in Redis vs in this node's set.

    Exit 1 when Redis cannot be reached or this node's link is down, 3 without [fleet].
    """
    import json

    from floodguard.fleet import FleetError, report
    from floodguard.store import Store

    cfg = configmod.load(config_path)
    if not cfg.fleet.redis_url:
        raise FleetError("no fleet configured ([fleet] redis_url is empty)")
    store = Store(cfg.state.path)
    sets = _fleet_sets(cfg)
    try:
        data = report(cfg, store, sets)
    finally:
        store.close()
        if sets is not None:
            sets.close()  # type: ignore[attr-defined]
    link = data["link"]
    ok = data["redis"]["ok"] and bool(link and link.get("running") and link.get("up"))
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
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
    sys.exit(ExitCode.OK if ok else ExitCode.FAILURE)


if __name__ == "__main__":
    main()
