"""Click commands: ``floodguard registrar`` (run the server) and ``floodguard endpoints``.

The main CLI loads them when used; ``python -m floodguard.registrar.commands`` runs a small group
with both (the lab and the tests start the registrar that way). The config is read by
``floodguard.config.load`` and errors end the command as in the main CLI (`floodguard.cli`):
one line and the exit code of `floodguard.errors` (3 for an invalid config).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import click

from floodguard import config as configmod
from floodguard.cli import FloodguardCommand, FloodguardGroup, config_option, json_option
from floodguard.registrar.core import Settings


def load_settings(path: str | None) -> Settings:
    """The config file (as ``floodguard.config.load`` reads it) as registrar Settings; relative
    file names in it are taken from the config file's folder. Raises ConfigError."""
    cfg = configmod.load(path)
    settings = Settings.from_config(cfg)
    if not cfg.source:
        return settings
    base = Path(cfg.source).parent
    resolved = {}
    for name in ("accounts", "state_path", "tls_cert", "tls_key"):
        value = getattr(settings, name)
        if value and not os.path.isabs(value):
            resolved[name] = str(base / value)
    return replace(settings, **resolved) if resolved else settings


@click.command("registrar", cls=FloodguardCommand)
@config_option
@click.option("-v", "--verbose", is_flag=True, help="log every binding change")
def registrar_command(config_path: str | None, verbose: bool) -> None:
    """Run the built-in RFC 3261 registrar (UDP/TCP, TLS when a certificate is set).

    Logs events on stderr as the guard does (floodguard.events): JSON lines with a journald
    priority, a readable line on a terminal.
    """
    from floodguard.events import EventHandler, EventLog
    from floodguard.registrar import server

    settings = load_settings(config_path)
    events = EventLog(sys.stderr)
    handler = EventHandler(events)
    root = logging.getLogger("floodguard.registrar")
    root.handlers[:] = [handler]
    root.propagate = False
    root.setLevel(logging.INFO if verbose else logging.WARNING)

    def ready(srv: server.RegistrarServer) -> None:
        events.emit("registrar_ready",
                    message=f"listening on {', '.join(srv.addresses)}",
                    addresses=list(srv.addresses), bindings=len(srv.table),
                    realm=settings.realm)

    server.run(settings, ready=ready)


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


@click.command("endpoints", cls=FloodguardCommand)
@config_option
@json_option
def endpoints_command(config_path: str | None, as_json: bool) -> None:
    """List registered endpoints: AOR, contact, source, expiry, online/offline, last seen."""
    from floodguard.registrar.bindings import read_endpoints

    settings = load_settings(config_path)
    now = time.time()
    rows = read_endpoints(settings.state_path, now)
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


@click.group(cls=FloodguardGroup, context_settings={"help_option_names": ["-h", "--help"]})
def _group() -> None:
    """floodguard registrar commands (standalone entry point)."""


_group.add_command(registrar_command)
_group.add_command(endpoints_command)

if __name__ == "__main__":
    _group()
