"""Config loading, defaults, VOS3000 aliases and validation messages."""

import pytest

from floodguard import config as cfgmod
from floodguard.config import Config, ConfigError, loads


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        cfgmod.loads(text)
    return info.value.errors


def test_defaults_match_reference():
    cfg = Config()
    assert cfg.sip.ports == (5060,)
    assert cfg.sip.transports == ("udp", "tcp")
    assert cfg.sip.mode == "local"
    assert (cfg.limits.register_rate, cfg.limits.register_burst) == (5, 10)
    assert (cfg.limits.sip_rate, cfg.limits.sip_burst) == (20, 50)
    assert cfg.limits.queue_budget == 20000
    assert cfg.limits.udp_oversize == 4016
    assert cfg.suspension.enabled is True
    assert cfg.suspension.register_retry == 6
    assert cfg.suspension.suspend_time == 180
    assert cfg.blacklist.auth_failures == 5
    assert cfg.blacklist.window == 600
    assert cfg.blacklist.ban_time == 3600
    assert cfg.blacklist.escalation == 2.0
    assert cfg.blacklist.max_ban_time == 86400
    assert cfg.blacklist.allow == ("127.0.0.0/8", "::1/128")
    assert "friendly-scanner" in cfg.scanner.user_agents
    assert cfg.queue.num == 0 and cfg.queue.workers == 1 and cfg.queue.fail_open is True
    assert cfg.registrar.expire == 3600
    assert cfg.registrar.min_expire == 60
    assert cfg.registrar.time_to_live == 60
    assert cfg.registrar.algorithms == ("MD5", "SHA-256")
    assert cfg.state.path == "/var/lib/floodguard/state.db"
    assert cfg.metrics.listen == "127.0.0.1:9477"


FULL = """
[sip]
ports = [5060, 5070]
transports = ["udp"]
mode = "forward"
registrar_interfaces = ["eth1"]
[limits]
register_rate = 3
register_burst = 6
sip_rate = 10
sip_burst = 20
queue_budget = 5000
udp_oversize = 1500
[suspension]
enabled = false
register_retry = 3
suspend_time = 600
[blacklist]
auth_failures = 4
window = 300
ban_time = 1800
escalation = 3.0
max_ban_time = 7200
allow = ["10.0.0.0/8", "2001:db8::/32"]
[scanner]
user_agents = ["friendly-scanner"]
[[gateway]]
name = "callcentre"
sources = ["198.51.100.0/24"]
cps = 50
[[gateway]]
name = "carrier"
sources = ["203.0.113.7/32", "2001:db8:1::/48"]
cps = 200
[queue]
num = 3
workers = 2
fail_open = false
[registrar]
listen = ["0.0.0.0:5060", "[::]:5060"]
realm = "example.com"
expire = 1800
min_expire = 30
time_to_live = 120
accounts = "/tmp/accounts.toml"
algorithms = ["SHA-256", "MD5"]
[state]
path = "/tmp/state.db"
[metrics]
listen = "[::1]:9477"
"""


def test_every_key_is_read():
    cfg = cfgmod.loads(FULL)
    assert cfg.sip.ports == (5060, 5070)
    assert cfg.sip.mode == "forward"
    assert cfg.limits.queue_budget == 5000 and cfg.limits.udp_oversize == 1500
    assert cfg.suspension.enabled is False and cfg.suspension.suspend_time == 600
    assert cfg.blacklist.allow == ("10.0.0.0/8", "2001:db8::/32")
    assert [g.name for g in cfg.gateways] == ["callcentre", "carrier"]
    assert cfg.gateways[1].sources == ("203.0.113.7/32", "2001:db8:1::/48")
    assert cfg.gateways[1].cps == 200
    assert cfg.queue.num == 3 and cfg.queue.workers == 2 and cfg.queue.fail_open is False
    assert cfg.registrar.listen == ("0.0.0.0:5060", "[::]:5060")
    assert cfg.registrar.algorithms == ("SHA-256", "MD5")
    assert cfg.metrics.listen == "[::1]:9477"


def test_dumps_round_trips():
    cfg = cfgmod.loads(FULL)
    assert cfgmod.loads(cfgmod.dumps(cfg)) == cfg


def test_error_message_names_key_and_value():
    assert errors_of('[suspension]\nregister_retry = "six"\n') == [
        'suspension.register_retry: must be an integer >= 1, got "six"'
    ]


def test_every_error_is_reported_at_once():
    errs = errors_of(
        '[suspension]\nregister_retry = 0\nsuspend_time = -1\n'
        '[sip]\nports = [70000]\nmode = "bridge"\n'
        '[limits]\nregister_rate = "fast"\n'
        '[blacklist]\nallow = ["not-a-net"]\n'
        '[registrar]\nlisten = ["localhost"]\nalgorithms = ["SHA-1"]\n'
    )
    keys = [e.split(":")[0] for e in errs]
    assert keys == [
        "suspension.register_retry", "suspension.suspend_time", "sip.ports", "sip.mode",
        "limits.register_rate", "blacklist.allow", "registrar.listen", "registrar.algorithms",
    ]


def test_unknown_keys_and_sections_are_errors():
    errs = errors_of("[suspension]\nregister_rety = 6\n[limit]\nsip_rate = 1\n")
    assert errs[0].startswith("suspension.register_rety: unknown key")
    assert errs[1].startswith("limit: unknown section")


def test_booleans_are_not_integers():
    errs = errors_of("[suspension]\nregister_retry = true\nenabled = 1\n")
    assert errs == [
        "suspension.register_retry: must be an integer >= 1, got true",
        "suspension.enabled: must be true or false, got 1",
    ]


def test_cross_field_checks():
    errs = errors_of("[registrar]\nexpire = 30\nmin_expire = 60\n"
                     "[blacklist]\nban_time = 100\nmax_ban_time = 50\n")
    assert errs[0].startswith("registrar.min_expire: must be <= registrar.expire")
    assert errs[1].startswith("blacklist.max_ban_time: must be >= blacklist.ban_time")


def test_gateway_errors_are_indexed():
    errs = errors_of('[[gateway]]\nname = "a"\nsources = ["x"]\n[[gateway]]\nname = "a"\n'
                     'sources = ["10.0.0.0/8"]\ncps = 0\n')
    assert errs[0] == 'gateway[0].sources: must be a list of IP networks in CIDR form, got ["x"]'
    assert len(errs) == 3
    assert errs[1] == "gateway[1].cps: must be a number > 0, got 0"
    assert 'name "a" is used more than once' in errs[-1]


def test_invalid_toml_is_one_clear_error():
    errs = errors_of("[sip\nports=")
    assert len(errs) == 1 and "not valid TOML" in errs[0]


def test_vos3000_aliases_map_onto_keys():
    cfg = cfgmod.loads(
        "[vos3000]\nSS_ENDPOINTREGISTERRETRY = 3\nSS_ENDPOINTREGISTERSUSPEND = 0\n"
        "SS_ENDPOINTREGISTERSUSPENDTIME = 300\nSS_ENDPOINTTIMETOLIVE = 120\n"
        "SS_ENDPOINT_EXPIRE = 1800\n"
    )
    assert cfg.suspension.register_retry == 3
    assert cfg.suspension.enabled is False
    assert cfg.suspension.suspend_time == 300
    assert cfg.registrar.time_to_live == 120
    assert cfg.registrar.expire == 1800


def test_vos3000_alias_values_are_validated_under_the_target_key():
    errs = errors_of('[vos3000]\nSS_ENDPOINTREGISTERRETRY = "many"\n')
    assert errs == ['suspension.register_retry: must be an integer >= 1, got "many"']


def test_vos3000_conflict_and_unknown_parameter():
    errs = errors_of("[suspension]\nregister_retry = 4\n[vos3000]\n"
                     "SS_ENDPOINTREGISTERRETRY = 6\nSS_FOO = 1\n")
    assert any(e.startswith("vos3000.SS_ENDPOINTREGISTERRETRY: conflicts with") for e in errs)
    assert any(e.startswith("vos3000.SS_FOO: unknown parameter") for e in errs)


def test_load_path_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv(cfgmod.ENV_VAR, raising=False)
    assert cfgmod.resolve_path(None).as_posix() == cfgmod.DEFAULT_PATH
    f = tmp_path / "fg.toml"
    f.write_text("[suspension]\nsuspend_time = 240\n")
    monkeypatch.setenv(cfgmod.ENV_VAR, str(f))
    assert cfgmod.load().suspension.suspend_time == 240
    assert cfgmod.load().source == str(f)


def test_explicit_missing_file_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv(cfgmod.ENV_VAR, raising=False)
    with pytest.raises(ConfigError) as info:
        cfgmod.load(tmp_path / "nope.toml")
    assert "no such file" in info.value.errors[0]


def test_the_readme_configuration_example_is_valid():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"## Configuration.*?```toml\n(.*?)```", readme, re.S)
    assert block is not None
    cfg = cfgmod.loads(block.group(1))
    assert cfg.suspension.register_retry == 6 and cfg.gateways[0].name == "callcentre"


def test_dumps_can_hide_the_redis_password():
    cfg = cfgmod.loads('[fleet]\nredis_url = "rediss://edge:s3cret@redis.example:6380/0"\n')
    assert "s3cret" in cfgmod.dumps(cfg)
    shown = cfgmod.dumps(cfg, redact=True)
    assert "s3cret" not in shown and 'redis_url = "rediss://edge:***@redis.example:6380/0"' in shown
    assert cfgmod.redact_url("redis://redis.example:6379/0") == "redis://redis.example:6379/0"


def test_forward_mode_needs_the_registrars_interfaces() -> None:
    with pytest.raises(ConfigError) as err:
        loads('[sip]\nmode = "forward"\n')
    assert "sip.registrar_interfaces: required" in str(err.value)
    with pytest.raises(ConfigError) as err:
        loads('[sip]\nmode = "forward"\nregistrar_interfaces = ["bad name/x"]\n')
    assert "sip.registrar_interfaces" in str(err.value)


def test_udp_oversize_bounds() -> None:
    """Below 1,300 bytes RFC 3261 lets any request go over UDP; above the queue's copy range a
    packet cut short would not be oversize."""
    from floodguard.kernel.nfqueue import COPY_RANGE

    assert cfgmod.UDP_OVERSIZE_MAX == COPY_RANGE
    assert loads(f"[limits]\nudp_oversize = {COPY_RANGE}\n").limits.udp_oversize == COPY_RANGE
    assert errors_of("[limits]\nudp_oversize = 1299\n") == [
        "limits.udp_oversize: must be an integer from 1300 to 65531, got 1299"]
    assert errors_of("[limits]\nudp_oversize = 65532\n")[0].startswith("limits.udp_oversize:")
    assert errors_of('[limits]\nudp_oversize = "4k"\n')[0].startswith("limits.udp_oversize:")
