"""Checks of the deployment files that need no container: units, role, Vagrantfile (the wheel
and sdist: test_wheel_install.py).

- each shipped unit passes ``systemd-analyze verify`` and states the promised options;
- the role's variables mirror every config key with floodguard's own defaults (rendered with
  Ansible, read back by floodguard);
- ``ansible-lint`` (production profile) and ``ansible-playbook --syntax-check`` pass;
- ``vagrant validate`` passes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from floodguard import config as configmod

from .conftest import ANSIBLE_DIR, REPO, SITE, UNIT_DIR, UNITS, ansible_env
from .images import sh

ROLE = ANSIBLE_DIR / "roles" / "floodguard"
FLOODGUARD = Path(sys.executable).with_name("floodguard")


def need(tool: str) -> str:
    """The tool's path, or a loud failure naming the Debian package."""
    path = shutil.which(tool)
    if path is None:
        package = {"ansible-lint": "ansible-lint", "ansible-playbook": "ansible-core",
                   "ansible": "ansible-core", "vagrant": "vagrant",
                   "systemd-analyze": "systemd"}[tool]
        pytest.fail(f"{tool} is missing: apt-get install {package} (run `sudo make deps`)",
                    pytrace=False)
    return path


def unit_options(name: str) -> dict[str, list[str]]:
    """Key -> values of a unit file (all sections; repeated keys keep every value)."""
    out: dict[str, list[str]] = {}
    for line in (UNIT_DIR / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.parametrize("unit", UNITS)
def test_unit_passes_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    """systemd-analyze verify, with ExecStart pointing at this checkout's floodguard (verify
    insists the binary exists; the container test verifies the installed units as they are)."""
    need("systemd-analyze")
    assert FLOODGUARD.exists(), f"{FLOODGUARD} missing: run `make deps`"
    for name in UNITS:  # the units refer to each other
        text = (UNIT_DIR / name).read_text().replace("/usr/local/bin/floodguard",
                                                    str(FLOODGUARD))
        (tmp_path / name).write_text(text)
    result = sh([need("systemd-analyze"), "verify", str(tmp_path / unit)], check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_units_state_the_promised_options() -> None:
    """Ordering, reload, restart and hardening options of the three units."""
    rules = unit_options("floodguard-rules.service")
    assert rules["Type"] == ["oneshot"] and rules["RemainAfterExit"] == ["yes"]
    assert "network-pre.target" in rules["Before"][0].split()
    assert "network-pre.target" in rules["Wants"][0].split()
    assert " apply " in rules["ExecStart"][0] and " apply " in rules["ExecReload"][0]
    assert " remove " in rules["ExecStop"][0]
    guard = unit_options("floodguard.service")
    assert guard["Restart"] == ["on-failure"]
    assert guard["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert guard["ExecStart"][0].split()[1] == "run"
    registrar = unit_options("floodguard-registrar.service")
    assert registrar["ExecStart"][0].split()[1] == "registrar"
    assert registrar["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    for options in (rules, guard):
        assert options["CapabilityBoundingSet"] == ["CAP_NET_ADMIN CAP_NET_RAW"]
    for options in (rules, guard, registrar):
        assert options["ProtectSystem"] == ["strict"]
        assert options["StateDirectory"] == ["floodguard"]
        for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
            assert options[key] == ["yes"], key


# The [Unit] sections of the host firewalls' units as Debian 12 ships them (nftables,
# netfilter-persistent, firewalld, ufw); their services are stand-ins.
HOST_FIREWALLS = {
    "nftables.service": "DefaultDependencies=no\nWants=network-pre.target\n"
                        "Before=network-pre.target shutdown.target\nConflicts=shutdown.target\n",
    "netfilter-persistent.service": "DefaultDependencies=no\n"
                                    "Wants=network-pre.target systemd-modules-load.service "
                                    "local-fs.target\nBefore=network-pre.target shutdown.target\n"
                                    "After=systemd-modules-load.service local-fs.target\n"
                                    "Conflicts=shutdown.target\n",
    "firewalld.service": "Before=network-pre.target\nWants=network-pre.target\n"
                         "After=dbus.service\nAfter=polkit.service\n"
                         "Conflicts=iptables.service ip6tables.service ebtables.service "
                         "ipset.service nftables.service\n",
    "ufw.service": "DefaultDependencies=no\nBefore=network-pre.target\n"
                   "Wants=network-pre.target local-fs.target\nAfter=local-fs.target\n",
}


def test_rules_unit_comes_after_the_host_firewalls_and_reloads_with_them(tmp_path: Path) -> None:
    """Ordered after every host firewall (which load or flush rules when they start) with no
    ordering cycle whichever of them is installed, re-applied when the reloadable ones reload,
    and not PartOf= any (stopping the host firewall must not remove floodguard's rules)."""
    rules = unit_options("floodguard-rules.service")
    after = " ".join(rules["After"]).split()
    assert set(HOST_FIREWALLS) <= set(after)
    assert sorted(" ".join(rules["ReloadPropagatedFrom"]).split()) == [
        "firewalld.service", "nftables.service"]  # ufw and netfilter-persistent cannot reload
    assert "PartOf" not in rules and "BindsTo" not in rules
    need("systemd-analyze")
    for name in UNITS:
        (tmp_path / name).write_text((UNIT_DIR / name).read_text().replace(
            "/usr/local/bin/floodguard", str(FLOODGUARD)))
    for name, unit in HOST_FIREWALLS.items():
        (tmp_path / name).write_text(f"[Unit]\n{unit}[Service]\nType=oneshot\n"
                                     "RemainAfterExit=yes\nExecStart=/bin/true\n")
    result = sh([need("systemd-analyze"), "verify",
                 *(str(tmp_path / name) for name in (*HOST_FIREWALLS, *UNITS))], check=False)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def _config_fields() -> list[tuple[str, str]]:
    """(section, key) of every key of the config's tables."""
    pairs = []
    for section, cls in configmod._SECTIONS.items():
        pairs += [(section, f.name) for f in dataclasses.fields(cls)]
    return pairs


def _array_tables() -> list[str]:
    """The config's arrays of tables ([[gateway]], [[feed]], ...) by their Config field name."""
    sections = {f.name for f in dataclasses.fields(configmod.Config)}
    return sorted(name for name in sections - set(configmod._SECTIONS) - {"source"})


def test_role_variables_mirror_every_config_key() -> None:
    """Each config key has its floodguard_<section>_<key> default, argument spec and template
    line."""
    defaults = (ROLE / "defaults/main.yml").read_text()
    specs = (ROLE / "meta/argument_specs.yml").read_text()
    template = (ROLE / "templates/floodguard.toml.j2").read_text()
    missing = []
    for section, key in _config_fields():
        var = f"floodguard_{section}_{key}"
        if not re.search(rf"^{var}:", defaults, re.MULTILINE):
            missing.append(f"defaults: {var}")
        if not re.search(rf"^      {var}:", specs, re.MULTILINE):
            missing.append(f"argument_specs: {var}")
        if f"{{{{ {var} " not in template:
            missing.append(f"template: {var}")
    for table in _array_tables():
        var = f"floodguard_{table}"
        if not re.search(rf"^{var}:", defaults, re.MULTILINE):
            missing.append(f"defaults: {var}")
        if not re.search(rf"^      {var}:", specs, re.MULTILINE):
            missing.append(f"argument_specs: {var}")
        if f"in {var} %}}" not in template:
            missing.append(f"template: {var}")
    if not re.search(r"^floodguard_accounts:", defaults, re.MULTILINE):
        missing.append("defaults: floodguard_accounts")
    assert not missing, missing


def _render(tmp_path: Path, template: str, extra: dict[str, object]) -> Path:
    """Render a role template with the role defaults plus extra vars, using Ansible itself."""
    dest = tmp_path / Path(template).stem
    variables = tmp_path / "vars.json"
    variables.write_text(json.dumps(extra))
    env = ansible_env(tmp_path)
    sh([need("ansible"), "localhost", "-i", "localhost,", "-c", "local",
        "-e", f"@{ROLE / 'defaults/main.yml'}", "-e", f"@{variables}",
        "-e", f"playbook_dir={ANSIBLE_DIR}",
        "-m", "ansible.builtin.template", "-a", f"src={ROLE / 'templates' / template} "
        f"dest={dest} mode=0600"], env=env, timeout=120)
    return dest


def test_role_defaults_render_floodguards_own_defaults(tmp_path: Path) -> None:
    """The config the role writes with its defaults is exactly floodguard's built-in one."""
    rendered = _render(tmp_path, "floodguard.toml.j2", {})
    ours = configmod.load(rendered)
    assert configmod.dumps(ours) == configmod.dumps(configmod.Config())


def test_role_renders_gateways_accounts_and_odd_strings(tmp_path: Path) -> None:
    """Gateways, accounts and strings that need escaping survive the TOML templates."""
    from floodguard.registrar import accounts as accountsmod

    realm = 'sip "main" \\ office é'
    rendered = _render(tmp_path, "floodguard.toml.j2", {
        "floodguard_registrar_realm": realm,
        "floodguard_gateways": [{"name": "cc", "sources": ["198.51.100.0/24"], "cps": 80},
                                {"name": "branch", "sources": ["203.0.113.0/28"]}],
        "floodguard_feeds": [{"name": "local", "source": "/etc/floodguard/feed.txt",
                              "interval": 600}],
        "floodguard_limits_register_rate": 7.5,
    })
    cfg = configmod.load(rendered)
    assert cfg.registrar.realm == realm
    assert [(g.name, g.sources, g.cps) for g in cfg.gateways] == [
        ("cc", ("198.51.100.0/24",), 80.0), ("branch", ("203.0.113.0/28",), 50.0)]
    assert cfg.limits.register_rate == 7.5
    assert [(f.name, f.source, f.interval, f.ban_time) for f in cfg.feeds] == [
        ("local", "/etc/floodguard/feed.txt", 600, configmod.FeedConfig().ban_time)]
    sha = "ab" * 32
    rendered = _render(tmp_path, "accounts.toml.j2", {"floodguard_accounts": [
        {"user": "1001", "password": 'p"w\\1'},
        {"user": "1002", "ha1_sha256": sha, "algorithms": ["SHA-256"]}]})
    accounts = accountsmod.load(rendered)
    assert accounts["1001"].password == 'p"w\\1'
    assert accounts["1002"].stored_ha1("SHA-256") == sha
    assert accounts["1002"].algorithms == ("SHA-256",)


def test_ansible_lint_is_clean(tmp_path: Path) -> None:
    """ansible-lint with the production profile reports nothing."""
    result = sh([need("ansible-lint"), "--profile", "production", "--nocolor", "ansible/"],
                check=False, cwd=REPO, timeout=300, env=ansible_env(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_playbook_syntax_with_the_example_inventory(tmp_path: Path) -> None:
    """site.yml parses with the example inventory."""
    sh([need("ansible-playbook"), "--syntax-check", "-i",
        str(ANSIBLE_DIR / "inventory.example.yml"), str(SITE)], cwd=REPO,
       env=ansible_env(tmp_path))


def test_vagrantfile_validates() -> None:
    """vagrant validate accepts the Vagrantfile (no box or provider needed)."""
    result = subprocess.run([need("vagrant"), "validate"], cwd=REPO, capture_output=True,
                            text=True, timeout=300, stdin=subprocess.DEVNULL,
                            env=dict(os.environ, VAGRANT_CHECKPOINT_DISABLE="1"))
    assert result.returncode == 0, result.stdout + result.stderr
