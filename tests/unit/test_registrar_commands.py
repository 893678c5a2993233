"""`floodguard registrar` / `floodguard endpoints` commands and registrar settings loading."""

import json
import subprocess
import sys
import time

from click.testing import CliRunner

from floodguard.registrar.bindings import Binding, BindingTable
from floodguard.registrar.commands import endpoints_command, load_settings, registrar_command


def write_config(tmp_path, registrar: str = "") -> str:
    path = tmp_path / "fg.toml"
    path.write_text(f'[registrar]\nlisten = ["127.0.0.1:15060"]\n{registrar}\n'
                    f'[state]\npath = "{tmp_path / "state.db"}"\n')
    return str(path)


def test_settings_take_registrar_keys_and_resolve_relative_paths(tmp_path):
    path = write_config(tmp_path, 'accounts = "accounts.toml"\ntls_cert = "c.pem"\n'
                                  'tls_key = "/etc/k.pem"\nnonce_lifetime = 90\n'
                                  'tls_listen = ["[::]:5061"]\ntime_to_live = 30\n')
    s = load_settings(path)
    assert s.accounts == str(tmp_path / "accounts.toml")
    assert s.tls_cert == str(tmp_path / "c.pem") and s.tls_key == "/etc/k.pem"
    assert s.nonce_lifetime == 90 and s.tls_listen == ("[::]:5061",) and s.time_to_live == 30
    assert s.state_path == str(tmp_path / "state.db")


def test_every_settings_error_is_reported_at_once(tmp_path):
    path = write_config(tmp_path, 'nonce_lifetime = "long"\ntls_listen = ["nope"]\n'
                                  'expire = 0\nbogus = 1\n')
    result = CliRunner().invoke(registrar_command, ["-c", path])
    assert result.exit_code == 3
    for key in ("registrar.nonce_lifetime", "registrar.tls_listen", "registrar.expire",
                "registrar.bogus"):
        assert key in result.output


def test_connection_limits_are_read_and_validated(tmp_path):
    s = load_settings(write_config(tmp_path, "max_connections_per_source = 4\n"
                                             "tcp_write_timeout = 2.5\n"))
    assert (s.max_connections_per_source, s.tcp_write_timeout) == (4, 2.5)
    defaults = load_settings(write_config(tmp_path))
    assert (defaults.max_connections_per_source, defaults.tcp_write_timeout) == (32, 10.0)
    path = write_config(tmp_path, 'max_connections_per_source = 0\ntcp_write_timeout = "x"\n')
    result = CliRunner().invoke(registrar_command, ["-c", path])
    assert result.exit_code == 3
    assert "registrar.max_connections_per_source" in result.output
    assert "registrar.tcp_write_timeout" in result.output


def test_missing_explicit_config_file_fails(tmp_path):
    result = CliRunner().invoke(endpoints_command, ["-c", str(tmp_path / "none.toml")])
    assert result.exit_code == 3 and "no such file" in result.output


def test_endpoints_without_a_database(tmp_path):
    result = CliRunner().invoke(endpoints_command, ["-c", write_config(tmp_path)])
    assert result.exit_code == 0 and "no registered endpoints" in result.output
    result = CliRunner().invoke(endpoints_command, ["-c", write_config(tmp_path), "--json"])
    assert json.loads(result.output) == []


def test_endpoints_lists_bindings_as_table_and_json(tmp_path):
    now = time.time()
    table = BindingTable(tmp_path / "state.db", now=now)
    table.put(Binding("1001", "sip:1001@192.0.2.10:5070", "example.com", "udp", "192.0.2.10",
                      5070, "udp:0.0.0.0:5060", "c1", 2, now + 600, now - 30, now - 30, True,
                      "phone/1.0"))
    table.put(Binding("1002", "sip:1002@[2001:db8::5]:5070", "example.com", "tcp",
                      "2001:db8::5", 40000, "tcp:[::]:5060", "c2", 2, now + 60, now - 600,
                      now - 300, False))
    table.put(Binding("1003", "sip:1003@192.0.2.12", "example.com", "udp", "192.0.2.12", 5060,
                      "udp:0.0.0.0:5060", "c3", 2, now - 1, now - 3600, now - 3600, True))
    table.close()
    path = write_config(tmp_path)
    result = CliRunner().invoke(endpoints_command, ["-c", path])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["AOR", "CONTACT", "SOURCE", "EXPIRES", "IN", "STATUS", "LAST",
                                "SEEN"]
    assert "1001@example.com" in lines[1] and "udp:192.0.2.10:5070" in lines[1]
    assert "online" in lines[1] and "30s ago" in lines[1]
    assert "tcp:[2001:db8::5]:40000" in lines[2] and "offline" in lines[2]
    assert "1003" not in result.output  # expired
    assert "2 bindings, 1 online, 1 offline" in result.output
    rows = json.loads(CliRunner().invoke(endpoints_command, ["-c", path, "--json"]).output)
    assert [r["aor"] for r in rows] == ["1001@example.com", "1002@example.com"]
    first = rows[0]
    assert first["status"] == "online" and first["online"] is True
    assert 595 <= first["expires_in"] <= 600
    assert first["source"] == "udp:192.0.2.10:5070" and first["user_agent"] == "phone/1.0"
    assert 29 <= first["last_seen_ago"] <= 32


def test_module_entry_point_has_both_commands():
    out = subprocess.run([sys.executable, "-m", "floodguard.registrar.commands", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "registrar" in out and "endpoints" in out
