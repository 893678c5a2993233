"""What a lab run can be tuned with (``LabSettings``, whose defaults are what ``make demo``
uses) and the files a run writes from it: the lab's accounts and the floodguard config that the
rules, the guard and floodguard's own registrar read.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from floodguard.lab import sip
from floodguard.lab.topology import OFFICE_IP, REGISTRAR_IP

REGISTRARS = ("floodguard", "kamailio")

@dataclass
class LabSettings:
    """Everything a lab run can be tuned with; the defaults are what ``make demo`` uses."""

    duration: float = 10.0
    phones: int = 60
    storm_phones: int = 500
    fresh_phones: int = 2000
    office_phones: int = 30  # behind the office's NAT (nat-office)
    fresh_limit: float = 60.0
    refresh: float = 3.0
    register_timeout: float = 4.0
    warmup: float = 1.0
    botnet_rate: float = 100000.0
    botnet_sources: int = 25000
    volume_rate: float = 0.0
    registrar: str = "floodguard"
    registrar_cpus: str | None = "1"
    attacker_cpus: str | None = "0"
    phone_cpus: str | None = None
    attackers: int = 116  # real attacker hosts (distributed-guess uses 100 of them)
    sipvicious: bool = True
    workdir: Path | None = None
    keep_workdir: bool = False
    python: str = sys.executable

    def __post_init__(self) -> None:
        if self.registrar not in REGISTRARS:
            raise ValueError(f"registrar must be one of {', '.join(REGISTRARS)}")
        if self.phones < 1 or self.duration <= 0:
            raise ValueError("phones must be >= 1 and duration > 0")
        if self.storm_phones < 0 or self.fresh_phones < 0 or self.fresh_limit <= 0:
            raise ValueError("storm_phones and fresh_phones must be >= 0, fresh_limit > 0")
        ncpu = os.cpu_count() or 1
        if ncpu < 2:  # one CPU: pinning would only put everything on it anyway
            self.registrar_cpus = self.attacker_cpus = self.phone_cpus = None

    def module_argv(self, module: str, *args: str) -> list[str]:
        """``python -m module args...`` with the lab's interpreter."""
        return [self.python, "-m", module, *args]


def lab_config(settings: LabSettings, run_dir: Path, *, accounts: Path) -> str:
    """The floodguard config of one run (rules, guard and built-in registrar read it).

    The guard's settings are floodguard's defaults, none overridden: per-source limits 5/s
    burst 10 for REGISTER and 20/s burst 50 for all SIP, suspension after 6 proven failures for
    180 s, scanner agents, and the budget for sources the guard does not know yet adapted to
    the registrar's measured health (``[admission]`` mode auto, starting at 1000/s, between
    ``admission.floor`` and ``limits.queue_budget`` = 20,000/s).

    Lab-specific choices, none of them the guard's, each with its reason:
    - ``sip``: the lab's registrar listens on UDP and TCP port 5060 of its service address;
    - ``blacklist.allow`` = loopback only, so no lab address is exempt from any rule;
    - ``registrar.*``: the lab's own accounts, realm and state file, and ``time_to_live`` =
      10 s so the phones see OPTIONS liveness checks within a short run (the default is 60 s);
    - a ``[[gateway]]`` for the office's NAT address (its ``cps`` the default 50), as an
      operator declares a customer's NAT: its phones share one address, so the per-source
      limits (REGISTER 5/s) would cut them; the gateway's shared budget replaces them and makes
      the address shared-capable from the start.
    """
    return "\n".join([
        "[sip]",
        "ports = [5060]",
        'transports = ["udp", "tcp"]',
        "[blacklist]",
        'allow = ["127.0.0.0/8", "::1/128"]',
        "[registrar]",
        f'listen = ["{sip_listen()}"]',
        f'realm = "{sip.REALM}"',
        "expire = 3600",
        "min_expire = 60",
        "time_to_live = 10",
        f"accounts = {json.dumps(str(accounts))}",
        "[state]",
        f"path = {json.dumps(str(run_dir / 'state.db'))}",
        "[[gateway]]",
        'name = "office"',
        f'sources = ["{OFFICE_IP}/32"]',
        "",
    ])


def sip_listen() -> str:
    """The registrar's SIP address, ``ip:port``."""
    return f"{REGISTRAR_IP}:{sip.SIP_PORT}"


def total_phones(settings: LabSettings) -> int:
    """Every phone of the lab with its own address: the steady ones, the storm's and the
    fresh start's."""
    return settings.phones + settings.storm_phones + settings.fresh_phones


def office_first(settings: LabSettings) -> int:
    """The account index of the first office phone (they follow every other phone's)."""
    return total_phones(settings)


def stale_index(settings: LabSettings) -> int:
    """The account index of the office's stale-password phone (after the office phones)."""
    return office_first(settings) + settings.office_phones


def lab_users(settings: LabSettings) -> list[str]:
    """Every phone account of the lab (steady, storm, fresh-start and office phones, and the
    office's stale phone)."""
    return [sip.phone_user(i) for i in range(stale_index(settings) + 1)]


def write_run_files(settings: LabSettings, run_dir: Path) -> Path:
    """Write a run's accounts and floodguard config into ``run_dir``; returns the config."""
    accounts = run_dir / "accounts.toml"
    accounts.write_text(sip.accounts_toml(lab_users(settings)), encoding="utf-8")
    config = run_dir / "floodguard.toml"
    config.write_text(lab_config(settings, run_dir, accounts=accounts), encoding="utf-8")
    return config
