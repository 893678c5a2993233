"""The ``floodguard`` CLI: version, help, ``config check`` and ``config show``."""

import dataclasses
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from floodguard import __version__
from floodguard import config as cfgmod
from floodguard.cli import main


def run(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env)


def test_version_and_help():
    assert __version__ in run("--version").output
    out = run("--help").output
    assert "config" in out


def test_check_valid_file(tmp_path):
    f = tmp_path / "fg.toml"
    f.write_text("[suspension]\nregister_retry = 4\n")
    result = run("config", "check", "-c", str(f))
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


def test_check_invalid_file_exits_3_with_every_message(tmp_path):
    f = tmp_path / "fg.toml"
    f.write_text('[suspension]\nregister_retry = "six"\n[limits]\nsip_burst = 0\n')
    result = run("config", "check", "-c", str(f))
    assert result.exit_code == 3
    assert 'suspension.register_retry: must be an integer >= 1, got "six"' in result.output
    assert "limits.sip_burst: must be an integer >= 1, got 0" in result.output
    assert "Traceback" not in result.output


def test_env_var_selects_the_file(tmp_path):
    f = tmp_path / "fg.toml"
    f.write_text("[registrar]\nrealm = 'sip.example'\n")
    result = run("config", "show", env={cfgmod.ENV_VAR: str(f)})
    assert result.exit_code == 0
    assert 'realm = "sip.example"' in result.output


def test_show_prints_loadable_effective_config(tmp_path):
    f = tmp_path / "fg.toml"
    f.write_text("[vos3000]\nSS_ENDPOINTREGISTERSUSPENDTIME = 300\n")
    result = run("config", "show", "-c", str(f))
    assert result.exit_code == 0
    shown = cfgmod.loads(result.output)
    assert shown.suspension.suspend_time == 300
    assert dataclasses.replace(cfgmod.load(f), source=None) == shown


def test_installed_entry_point_runs():
    exe = Path(sys.executable).parent / "floodguard"
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert __version__ in out.stdout
