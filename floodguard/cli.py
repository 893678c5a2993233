"""Command-line entry points (click): ``floodguard config|apply|remove|show|run|...``."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from floodguard import __version__
from floodguard import config as configmod

CONFIG_HELP = f"config file (default: ${configmod.ENV_VAR} or {configmod.DEFAULT_PATH})"


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a one-line error (no traceback) and exit."""
    click.echo(f"floodguard: {message}", err=True)
    sys.exit(code)


def load_config(path: str | None) -> configmod.Config:
    """Load the config or exit 2 with every error, one per line."""
    try:
        return configmod.load(path)
    except configmod.ConfigError as exc:
        for line in exc.errors:
            click.echo(line, err=True)
        sys.exit(2)


config_option = click.option(
    "-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None,
    help=CONFIG_HELP,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="floodguard")
def main() -> None:
    """floodguard: keeps SIP registrars alive under registration floods and brute force."""


@main.group("config")
def config_group() -> None:
    """Check or show the configuration."""


@config_group.command("check")
@config_option
def config_check(config_path: str | None) -> None:
    """Exit 0 when the config is valid, 2 with every error when not."""
    cfg = load_config(config_path)
    click.echo(f"{cfg.source or 'built-in defaults'}: OK")


@config_group.command("show")
@config_option
def config_show(config_path: str | None) -> None:
    """Print the effective configuration as TOML."""
    cfg = load_config(config_path)
    click.echo(f"# effective configuration from {cfg.source or 'built-in defaults'}")
    click.echo(configmod.dumps(cfg), nl=False)


if __name__ == "__main__":
    main()
