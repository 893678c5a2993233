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
    refresh: float = 3.0
    register_timeout: float = 4.0
    warmup: float = 1.0
    botnet_rate: float = 100000.0
    botnet_sources: int = 25000
    volume_rate: float = 0.0
    queue_budget: int = 400
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
        ncpu = os.cpu_count() or 1
        if ncpu < 2:  # one CPU: pinning would only put everything on it anyway
            self.registrar_cpus = self.attacker_cpus = self.phone_cpus = None

    def module_argv(self, module: str, *args: str) -> list[str]:
        """``python -m module args...`` with the lab's interpreter."""
        return [self.python, "-m", module, *args]


def lab_config(settings: LabSettings, run_dir: Path, *, accounts: Path) -> str:
    """The floodguard config of one run (rules, guard and built-in registrar read it).

    Lab-specific choices, each with its reason:
    - ``limits.queue_budget``: the global budget for sources the guard does not know yet. At
      the default (20,000/s) a spoofed botnet under every per-source limit would still be queued
      to the guard; the lab's registrar host handles a few hundred unknown requests a second,
      so the budget is set to that and the botnet is cut in the kernel. The phones registered
      during the warm-up are in the known set and bypass the budget.
    - ``registrar.time_to_live`` = 10 s so the phones see OPTIONS liveness checks within a
      short run (the default is 60 s).
    Everything else keeps floodguard's defaults (per-source limits 5/s burst 10 for REGISTER and
    20/s burst 50 for all SIP, suspension after 6 proven failures for 180 s, scanner agents).
    """
    return "\n".join([
        "[sip]",
        "ports = [5060]",
        'transports = ["udp", "tcp"]',
        "[limits]",
        f"queue_budget = {settings.queue_budget}",
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


def lab_users(settings: LabSettings) -> list[str]:
    """Every phone account of the lab (the steady phones and the storm phones)."""
    return [sip.phone_user(i) for i in range(settings.phones + settings.storm_phones)]


def write_run_files(settings: LabSettings, run_dir: Path) -> Path:
    """Write a run's accounts and floodguard config into ``run_dir``; returns the config."""
    accounts = run_dir / "accounts.toml"
    accounts.write_text(sip.accounts_toml(lab_users(settings)), encoding="utf-8")
    config = run_dir / "floodguard.toml"
    config.write_text(lab_config(settings, run_dir, accounts=accounts), encoding="utf-8")
    return config
