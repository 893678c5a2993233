"""One error root (``floodguard.errors.FloodguardError``) and the CLI's exit codes (#14 item 6).

Every exception class defined anywhere in the package is found by importing each module, so a
new error root fails here until it derives from FloodguardError.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil

import pytest
from click.testing import CliRunner

import floodguard
from floodguard import cli, cli_books
from floodguard.bans import BanBook
from floodguard.config import load
from floodguard.errors import EXIT_CODES, ExitCode, FloodguardError, exit_code_of
from floodguard.store import Store


def exception_classes() -> list[type[BaseException]]:
    """Every exception class a floodguard module defines (at module level)."""
    found: list[type[BaseException]] = []
    for info in pkgutil.walk_packages(floodguard.__path__, "floodguard."):
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if (inspect.isclass(obj) and issubclass(obj, BaseException)
                    and obj.__module__ == module.__name__):
                found.append(obj)
    return found


def qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


CLASSES = exception_classes()


def test_the_walk_finds_the_known_roots() -> None:
    names = {qualname(cls) for cls in CLASSES}
    assert {"floodguard.config.ConfigError", "floodguard.kernel.NotRootError",
            "floodguard.capture.PcapError", "floodguard.sip.framing.SipParseError"} <= names


@pytest.mark.parametrize("cls", [
    pytest.param(cls, id=qualname(cls)) for cls in CLASSES])
def test_every_exception_class_is_a_floodguard_error(cls: type[BaseException]) -> None:
    assert issubclass(cls, FloodguardError)
    code = cls.exit_code  # type: ignore[attr-defined]
    assert code in set(ExitCode) and code not in (ExitCode.OK, ExitCode.USAGE)


def test_exit_codes_are_distinct_documented_and_2_is_only_usage() -> None:
    codes = [code for code, _ in EXIT_CODES]
    assert len(set(codes)) == len(codes) and set(codes) == set(ExitCode)
    assert ExitCode.USAGE == 2
    assert all(getattr(cls, "exit_code", None) != 2 for cls in CLASSES)
    help_text = CliRunner().invoke(cli.main, ["--help"]).output
    assert "Exit codes:" in help_text
    for code in codes:
        assert f"\n    {int(code):<3}  " in help_text


def test_value_and_runtime_error_bases_kept() -> None:
    from floodguard.fleet.wire import BadEntry
    from floodguard.lab.procs import LabError
    from floodguard.lab.topology import TopologyError
    from floodguard.sip.message import SipParseError

    assert issubclass(SipParseError, ValueError) and issubclass(BadEntry, ValueError)
    assert issubclass(LabError, RuntimeError) and issubclass(TopologyError, RuntimeError)


def test_exit_code_of() -> None:
    from floodguard.kernel import KernelError, NotRootError

    assert exit_code_of(KernelError("x")) == 1
    assert exit_code_of(NotRootError("x")) == 5
    assert exit_code_of(PermissionError(13, "Permission denied")) == 5
    assert exit_code_of(OSError(98, "Address already in use")) == 1
    assert exit_code_of(ValueError("a bug")) is None
    assert exit_code_of(BrokenPipeError(32, "Broken pipe")) is None  # click's own handling


# ---------------------------------------------------------------- the CLI


def test_cli_config_error_exits_3_with_every_message(tmp_path) -> None:
    config = tmp_path / "f.toml"
    config.write_text('[limits]\nsip_burst = 0\n[suspension]\nregister_retry = "six"\n')
    result = CliRunner().invoke(cli.main, ["blacklist", "list", "-c", str(config)])
    assert result.exit_code == 3
    assert "limits.sip_burst" in result.output and "suspension.register_retry" in result.output
    missing = CliRunner().invoke(cli.main, ["config", "check", "-c", str(tmp_path / "no.toml")])
    assert missing.exit_code == 3 and "no such file" in missing.output


def test_cli_allow_listed_ban_exits_4(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "f.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n'
                      '[blacklist]\nallow = ["192.0.2.0/24"]\n')
    # the book without the kernel: the allow list is checked before any set is touched
    monkeypatch.setattr(cli_books, "ban_book", lambda cfg, need_kernel: BanBook(
        cfg, Store(cfg.state.path), None))
    result = CliRunner().invoke(cli.main, ["blacklist", "add", "192.0.2.7", "-c", str(config)])
    assert result.exit_code == 4, result.output
    assert "allow list" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    ttl = CliRunner().invoke(cli.main, ["blacklist", "add", "198.51.100.7", "--ttl=-1",
                                        "-c", str(config)])
    assert ttl.exit_code == 2 and "--ttl" in ttl.output  # malformed: a usage error
    assert load(str(config)).blacklist.allow  # the config was read, not defaulted


@pytest.mark.parametrize("argv", [
    ["blacklist", "add", "not-an-ip"],
    ["no-such-command"],
    ["apply", "--no-such-option"],
    ["lab", "--scenario", "nope"],
    ["registrar", "--bogus"],
])
def test_cli_usage_error_exits_2(tmp_path, argv: list[str]) -> None:
    config = tmp_path / "f.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n')
    result = CliRunner().invoke(cli.main, argv)
    assert result.exit_code == 2, result.output


def test_cli_not_root_exits_5(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(cli.main, ["remove"])
    assert result.exit_code == 5 and "must be run as root" in result.output


def test_cli_fleet_status_without_fleet_exits_3(tmp_path) -> None:
    config = tmp_path / "f.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n')
    result = CliRunner().invoke(cli.main, ["fleet", "status", "-c", str(config)])
    assert result.exit_code == 3 and "no fleet configured" in result.output


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_path: str | None) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(cli.configmod, "load", broken)
    result = CliRunner().invoke(cli.main, ["config", "check"])
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)


def test_subsystem_commands_map_errors_on_their_own_too(tmp_path) -> None:
    from floodguard.registrar.commands import endpoints_command

    result = CliRunner().invoke(endpoints_command, ["-c", str(tmp_path / "none.toml")])
    assert result.exit_code == 3 and "no such file" in result.output
