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
from floodguard.lab.topology import REGISTRAR_IP

REGISTRARS = ("floodguard", "kamailio")

@dataclass
class LabSettings:
    """Everything a lab run can be tuned with; the defaults are what ``make demo`` uses."""

    duration: float = 10.0
    phones: int = 60
    storm_phones: int = 500
    fresh_phones: int = 2000
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
    attackers: int = 16
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
      10 s so the phones see OPTIONS liveness checks within a short run (the default is 60 s).
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
        "",
    ])


def sip_listen() -> str:
    """The registrar's SIP address, ``ip:port``."""
    return f"{REGISTRAR_IP}:{sip.SIP_PORT}"


def total_phones(settings: LabSettings) -> int:
    """Every phone of the lab: the steady ones, the storm's and the fresh start's."""
    return settings.phones + settings.storm_phones + settings.fresh_phones


def lab_users(settings: LabSettings) -> list[str]:
    """Every phone account of the lab (steady, storm and fresh-start phones)."""
    return [sip.phone_user(i) for i in range(total_phones(settings))]


def write_run_files(settings: LabSettings, run_dir: Path) -> Path:
    """Write a run's accounts and floodguard config into ``run_dir``; returns the config."""
    accounts = run_dir / "accounts.toml"
    accounts.write_text(sip.accounts_toml(lab_users(settings)), encoding="utf-8")
    config = run_dir / "floodguard.toml"
    config.write_text(lab_config(settings, run_dir, accounts=accounts), encoding="utf-8")
    return config
