"""Click commands: ``floodguard registrar`` (run the server) and ``floodguard endpoints``.

The lead wires them into the main CLI with ``main.add_command``; ``python -m
floodguard.registrar.commands`` runs a small group with both, for tests and for use before that.

Config keys the schema may not know yet (``EXTRA_KEYS``: TLS, nonce lifetime, limits) are taken
out of ``[registrar]`` here before validation, so a file using them works either way.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any, NoReturn

import click

from floodguard import config as configmod
from floodguard.registrar.core import Settings


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"floodguard: {message}", err=True)
    sys.exit(code)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _listen_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError('must be a list of "ADDRESS:PORT" strings')
    for item in value:
        try:
            configmod.split_listen(item)
        except ValueError:
            raise ValueError('must be a list of "ADDRESS:PORT" strings') from None
    return tuple(value)


def _int_min(minimum: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"must be an integer >= {minimum}")
        return value

    return check


def _float_min(minimum: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise ValueError(f"must be a number >= {minimum:g}")
        return float(value)

    return check


# Registrar keys beyond the current config schema: name -> checker (defaults are in Settings).
EXTRA_KEYS: dict[str, Callable[[Any], Any]] = {
    "tls_cert": _str,
    "tls_key": _str,
    "tls_listen": _listen_list,
    "nonce_lifetime": _int_min(1),
    "max_contacts": _int_min(1),
    "tcp_idle_timeout": _int_min(1),
    "max_connections": _int_min(1),
    "liveness_timeout": _float_min(0.5),
}


def load_settings(path: str | None) -> Settings:
    """Read the config file (like ``floodguard.config.load``) into registrar Settings.

    Exits 2 listing every error, like the main CLI.
    """
    explicit = path is not None or configmod.ENV_VAR in os.environ
    target = configmod.resolve_path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            _fail(f"{target}: no such file", 2)
        return Settings.from_config(configmod.Config())
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"{target}: cannot read: {exc}", 2)
    errors: list[str] = []
    extras: dict[str, Any] = {}
    cfg: configmod.Config | None = None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        _fail(f"{target}: not valid TOML: {exc}", 2)
    section = data.get("registrar")
    known = {f.name for f in fields(configmod.RegistrarConfig)}
    if isinstance(section, dict):
        for name, check in EXTRA_KEYS.items():
            if name in section and name not in known:
                value = section.pop(name)
                try:
                    extras[name] = check(value)
                except ValueError as exc:
                    errors.append(f"registrar.{name}: {exc}, got {json.dumps(value)}")
    try:
        cfg = configmod.from_mapping(data, str(target))
    except configmod.ConfigError as exc:
        errors = exc.errors + errors
    if errors or cfg is None:
        for line in errors:
            click.echo(line, err=True)
        sys.exit(2)
    settings = Settings.from_config(cfg, extras)
    base = target.parent
    resolved = {}
    for name in ("accounts", "state_path", "tls_cert", "tls_key"):
        value = getattr(settings, name)
        if value and not os.path.isabs(value):
            resolved[name] = str(base / value)
    if resolved:
        settings = replace(settings, **resolved)
    return settings


_config_option = click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help=f"config file (default: ${configmod.ENV_VAR} or {configmod.DEFAULT_PATH})",
)


@click.command("registrar")
@_config_option
@click.option("-v", "--verbose", is_flag=True, help="log every binding change")
def registrar_command(config_path: str | None, verbose: bool) -> None:
    """Run the built-in RFC 3261 registrar (UDP/TCP, TLS when a certificate is set)."""
    from floodguard.config import ConfigError
    from floodguard.registrar import server
    from floodguard.registrar.bindings import BindingStoreError

    settings = load_settings(config_path)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
        format="floodguard registrar: %(levelname)s %(message)s",
    )

    def ready(srv: server.RegistrarServer) -> None:
        click.echo(
            f"floodguard registrar: listening on {', '.join(srv.addresses)}; "
            f"{len(srv.table)} bindings restored; realm {settings.realm}",
            err=True,
        )

    try:
        server.run(settings, ready=ready)
    except ConfigError as exc:
        for line in exc.errors:
            click.echo(line, err=True)
        sys.exit(2)
    except OSError as exc:
        _fail(exc.strerror or " ".join(str(exc).split()) or type(exc).__name__)
    except BindingStoreError as exc:
        _fail(" ".join(str(exc).split()))


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


@click.command("endpoints")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def endpoints_command(config_path: str | None, as_json: bool) -> None:
    """List registered endpoints: AOR, contact, source, expiry, online/offline, last seen."""
    from floodguard.registrar.bindings import BindingStoreError, read_endpoints

    settings = load_settings(config_path)
    now = time.time()
    try:
        rows = read_endpoints(settings.state_path, now)
    except BindingStoreError as exc:
        _fail(str(exc))
    if as_json:
        click.echo(json.dumps([row.as_dict(now) for row in rows], indent=2))
        return
    if not rows:
        click.echo("no registered endpoints")
        return
    header = ("AOR", "CONTACT", "SOURCE", "EXPIRES IN", "STATUS", "LAST SEEN")
    table = [header] + [
        (r.aor, r.contact, r.source, f"{r.expires_in}s", "online" if r.online else "offline",
         _ago(now - r.last_seen))
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        click.echo("  ".join(cells).rstrip())
    online = sum(r.online for r in rows)
    click.echo(f"\n{len(rows)} bindings, {online} online, {len(rows) - online} offline")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def _group() -> None:
    """floodguard registrar commands (standalone entry point)."""


_group.add_command(registrar_command)
_group.add_command(endpoints_command)

if __name__ == "__main__":
    _group()
