"""Command-line entry points (click): ``floodguard config|apply|remove|show|run|...``.

Errors end a command in one place: `ErrorMapping.invoke` (the ``floodguard`` group, and the
subsystem commands that also run on their own) turns a `FloodguardError` or an OSError into a
one-line message on stderr and the error's exit code (`floodguard.errors`); commands do not
catch errors to pick codes. Commands whose exit status is a result (``show``, ``status``,
``fleet status``, ``lab``) still exit 1 for "not good" themselves.

``--json`` (`json_option`) is on every command that prints. Its output is one JSON document on
stdout; an error in JSON mode is one too, with the same non-zero exit code::

    {"error": {"message": "...", "exit_code": 4, "details": ["...", ...]}}

(``details``: every problem of an invalid config, else the message alone). Usage errors
(exit 2) are reported that way too once ``--json`` is on the command line.

Commands live in modules by job: this one (config, apply, remove, show, run),
``cli_blacklist``, ``cli_allow``, ``cli_fleet``, ``cli_observe`` (status, replay); those and
the subsystem commands are loaded when used (``LAZY_COMMANDS``).
"""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from collections.abc import Mapping
from typing import Any, NoReturn

import click

from floodguard import __version__, addr
from floodguard import config as configmod
from floodguard.errors import EXIT_CODES, ExitCode, exit_code_of

CONFIG_HELP = f"config file (default: ${configmod.ENV_VAR} or {configmod.DEFAULT_PATH})"


def _exit_code_table() -> str:
    """The exit codes for the ``--help`` epilog (``\\b``: click keeps the lines as they are)."""
    lines = ["\b", "Exit codes:"]
    for code, text in EXIT_CODES:
        wrapped = textwrap.wrap(text, 66)
        lines.append(f"  {int(code):<3}  {wrapped[0]}")
        lines += [f"{'':7}{more}" for more in wrapped[1:]]
    lines += ["", "\b",
              "With --json, output and errors are one JSON document on stdout; an error is",
              '  {"error": {"message": ..., "exit_code": N, "details": [...]}}',
              "Durations (--ttl, --interval): seconds, or 90s, 30m, 4h, 1d, 2w, 1h30m."]
    return "\n".join(lines)


EPILOG = _exit_code_table()

# Commands imported when used (they import this module for its helpers).
LAZY_COMMANDS = {
    "registrar": "floodguard.registrar.commands:registrar_command",
    "endpoints": "floodguard.registrar.commands:endpoints_command",
    "lab": "floodguard.lab.command:lab_command",
    "explain": "floodguard.explain:explain_command",
    "blacklist": "floodguard.cli_blacklist:blacklist_group",
    "allow": "floodguard.cli_allow:allow_group",
    "fleet": "floodguard.cli_fleet:fleet_group",
    "status": "floodguard.cli_observe:status_cmd",
    "replay": "floodguard.cli_observe:replay_cmd",
}
_JSON_MODE = "floodguard.json"  # ctx.meta key: --json was given


def _remember_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta[_JSON_MODE] = True
    return value


# eager: it is known before any other argument is checked, so a usage error is JSON too
json_option = click.option("--json", "as_json", is_flag=True, is_eager=True,
                           callback=_remember_json,
                           help="machine-readable output (errors too: see --help)")


def json_mode() -> bool:
    """Whether the command being run was given ``--json``."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(_JSON_MODE))


def echo_json(data: Any) -> None:
    """The command's one JSON document on stdout."""
    click.echo(json.dumps(data, indent=2, default=str))


def error_document(message: str, code: int, details: list[str] | None = None) -> dict[str, Any]:
    """The JSON an error ends a ``--json`` command with."""
    return {"error": {"message": message, "exit_code": int(code),
                      "details": details if details is not None else [message]}}


def fail(message: str, code: int = ExitCode.FAILURE,
         details: list[str] | None = None) -> NoReturn:
    """Print a one-line error (no traceback; JSON with --json) and exit."""
    if json_mode():
        echo_json(error_document(message, code, details))
    else:
        click.echo(f"floodguard: {message}", err=True)
    sys.exit(int(code))


def one_line(exc: BaseException) -> str:
    """An exception as one line of text for the operator."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


def error_code(exc: BaseException) -> int | None:
    """The exit code a command ends with for exc, None for a bug (it keeps its traceback)."""
    return exit_code_of(exc)


def report_error(exc: BaseException, code: int) -> NoReturn:
    """End the command: the error on stderr (a config error: every problem, one per line)."""
    if isinstance(exc, configmod.ConfigError):
        if json_mode():
            fail(one_line(exc), code, list(exc.errors))
        for line in exc.errors:
            click.echo(line, err=True)
        sys.exit(int(code))
    fail(one_line(exc), code)


class ErrorMapping:
    """Mixin for click commands: the one place errors become a message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except click.ClickException as exc:
            if not ctx.meta.get(_JSON_MODE):
                raise  # click prints the usage and the message itself
            fail(exc.format_message(), exc.exit_code)
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


@click.group(cls=FloodguardGroup, lazy=LAZY_COMMANDS, epilog=EPILOG,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="floodguard")
def main() -> None:
    """floodguard: keeps SIP registrars alive under registration floods and brute force."""


@main.group("config")
def config_group() -> None:
    """Check or show the configuration."""


@config_group.command("check")
@config_option
@json_option
def config_check(config_path: str | None, as_json: bool) -> None:
    """Exit 0 when the config is valid, 3 with every error when not.

    JSON: {"ok": true, "source": the file or null for the built-in defaults}.
    """
    cfg = configmod.load(config_path)
    if as_json:
        echo_json({"ok": True, "source": cfg.source or None})
        return
    click.echo(f"{cfg.source or 'built-in defaults'}: OK")


@config_group.command("show")
@config_option
@json_option
def config_show(config_path: str | None, as_json: bool) -> None:
    """Print the effective configuration as TOML (secrets redacted).

    JSON: {"source": the file or null, "config": the same settings as an object}.
    """
    cfg = configmod.load(config_path)
    text = configmod.dumps(cfg, redact=True)
    if as_json:
        import tomllib

        echo_json({"source": cfg.source or None, "config": tomllib.loads(text)})
        return
    click.echo(f"# effective configuration from {cfg.source or 'built-in defaults'}")
    click.echo(text, nl=False)


# ---------------------------------------------------------------- kernel: apply / remove / show

backend_option = click.option(
    "--backend", type=click.Choice(["auto", "legacy", "nft"]), default="auto", show_default=True,
    help="iptables backend: auto asks `iptables -V`; never mix both on one host",
)


def _saved_state(cfg: configmod.Config) -> tuple[list[tuple[str, str, float]], list[str]]:
    """Bans and known sources from the state store, to reload into the sets (e.g. at boot),
    and the run-time allow list's networks (the kernel allow set holds them with the config's)."""
    import sqlite3
    from pathlib import Path

    path = Path(cfg.state.path)
    if not path.is_file():
        return [], []
    from floodguard.rulekeeper import saved_entries
    from floodguard.store import Store, StoreError

    # A damaged state file must never stop the firewall from coming up at boot.
    try:
        store = Store(path)
        try:
            entries = saved_entries(store)
            nets = [row.net for row in store.active_allows()]
        finally:
            store.close()
    except (StoreError, sqlite3.Error) as exc:
        click.echo(f"floodguard: warning: state not restored: {one_line(exc)}", err=True)
        return [], []
    return entries, nets


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
@json_option
def apply_cmd(config_path: str | None, dry_run: bool, backend: str, as_json: bool) -> None:
    """Install or update the kernel rules and ipsets (atomic, idempotent, IPv4 and IPv6).

    The allow set gets the config's allow list and the run-time one (floodguard allow).
    JSON: {"dry_run": true, "text": ...}, or {"backend", "changed_tables", "created_sets",
    "allow_added", "allow_removed", "restored" (null or {"loaded", "expired", "allowed",
    "invalid", "full"}), "warnings"}.
    """
    from dataclasses import asdict

    from floodguard import allows
    from floodguard.kernel import rules

    cfg = _admitted(configmod.load(config_path))
    entries, nets = _saved_state(cfg)
    ruleset = rules.render(allows.with_runtime(cfg, nets))
    if dry_run:
        text = rules.dry_run_text(ruleset, cfg.source)
        if as_json:
            echo_json({"dry_run": True, "text": text})
        else:
            click.echo(text, nl=False)
        return
    from floodguard.kernel import firewall

    firewall.require_root()
    from floodguard import rulekeeper  # the guard's rule keeper keeps what was applied last

    with rulekeeper.exclusive(cfg):
        report = firewall.apply(cfg, backend, ruleset=ruleset, saved_entries=entries)
        recorded = rulekeeper.record(cfg, report.backend)
    warnings = [*report.warnings, *filter(None, [recorded])]
    if report.restored is not None and report.restored.full:
        warnings.append(f"{report.restored.full} saved entries not restored: set full")
    if as_json:
        echo_json({"backend": report.backend, "changed_tables": list(report.changed_tables),
                   "created_sets": list(report.created_sets),
                   "allow_added": list(report.allow_added),
                   "allow_removed": list(report.allow_removed),
                   "restored": None if report.restored is None else asdict(report.restored),
                   "warnings": warnings})
        return
    for warning in warnings:
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
    click.echo(f"floodguard: applied ({report.backend} backend): "
               + ("; ".join(parts) if parts else "already up to date"))


@main.command("remove")
@config_option
@backend_option
@json_option
def remove_cmd(config_path: str | None, backend: str, as_json: bool) -> None:
    """Remove floodguard's chains, jumps and ipsets; leave every other rule untouched.

    JSON: {"tables": [...], "backends": [...], "destroyed_sets": [...]}.
    """
    from floodguard.kernel import firewall

    cfg = configmod.load(config_path)
    firewall.require_root()
    from floodguard import rulekeeper  # and never brings back what was removed

    with rulekeeper.exclusive(cfg):
        recorded = rulekeeper.record(cfg, None)
        report = firewall.remove(cfg, backend)
    if recorded is not None and not as_json:
        click.echo(f"floodguard: warning: {recorded}", err=True)
    if as_json:
        echo_json({"tables": list(report.tables), "backends": list(report.backends),
                   "destroyed_sets": list(report.destroyed_sets),
                   "warnings": [recorded] if recorded is not None else []})
        return
    parts = []
    if report.tables:
        parts.append(f"removed rules from {', '.join(report.tables)} "
                     f"({'/'.join(report.backends)} backend)")
    if report.destroyed_sets:
        parts.append(f"destroyed {len(report.destroyed_sets)} sets")
    click.echo("floodguard: " + ("; ".join(parts) if parts else "nothing to remove"))


@main.command("show")
@config_option
@json_option
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


# ---------------------------------------------------------------- guard: run


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


if __name__ == "__main__":
    main()
