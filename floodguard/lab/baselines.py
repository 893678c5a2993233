"""The defences the lab compares floodguard with, as plain iptables rules on the registrar host.

``DEFENCES`` names every defence a run can have:

- ``none``: nothing in front of the registrar (the lab's "unprotected" mode);
- ``guides``: the four rules the usual VoIP hardening guides give (scanner user agents dropped by
  string match, REGISTERs and all SIP limited per source by hashlimit), at the same per-source
  rates as floodguard's defaults (REGISTER 5/s burst 10, all SIP 20/s burst 50);
- ``floodguard``: floodguard with its default settings (the lab's "protected" mode);
- ``drop-spoofed``: the physical best case: the kernel drops every packet from the botnet's
  range first thing in the raw table, which only works because the lab knows the spoofed
  addresses; no real defence can.

``install``/``remove`` put the ``guides`` and ``drop-spoofed`` rules in and take them out
(floodguard's own rules are applied by the runner through ``floodguard apply``).
"""

from __future__ import annotations

from floodguard.lab import sip
from floodguard.lab.topology import BOTNET_NET, Topology

DEFENCES = ("none", "guides", "floodguard", "drop-spoofed")
DESCRIPTIONS = {
    "none": "unprotected",
    "guides": "the guides' 4 iptables rules",
    "floodguard": "floodguard defaults",
    "drop-spoofed": "drop every spoofed packet first (best case)",
}

_PORT = ["-p", "udp", "--dport", str(sip.SIP_PORT)]


def _hashlimit(name: str, rate: int, burst: int) -> list[str]:
    return ["-m", "hashlimit", "--hashlimit-above", f"{rate}/sec", "--hashlimit-burst",
            str(burst), "--hashlimit-mode", "srcip", "--hashlimit-name", name]


def rules(defence: str) -> list[tuple[str, str, list[str]]]:
    """The rules of a baseline defence: (table, chain, match and target)."""
    if defence == "guides":
        return [
            ("filter", "INPUT", [*_PORT, "-m", "string", "--string", "friendly-scanner",
                                 "--algo", "bm", "-j", "DROP"]),
            ("filter", "INPUT", [*_PORT, "-m", "string", "--string", "sipcli", "--algo", "bm",
                                 "-j", "DROP"]),
            ("filter", "INPUT", [*_PORT, "-m", "string", "--string", "REGISTER sip:", "--algo",
                                 "bm", *_hashlimit("guides-reg", 5, 10), "-j", "DROP"]),
            ("filter", "INPUT", [*_PORT, *_hashlimit("guides-sip", 20, 50), "-j", "DROP"]),
        ]
    if defence == "drop-spoofed":
        return [("raw", "PREROUTING", ["-s", BOTNET_NET, "-j", "DROP"])]
    if defence in DEFENCES:
        return []
    raise ValueError(f"unknown defence {defence!r} (choose from {', '.join(DEFENCES)})")


def install(topo: Topology, defence: str) -> None:
    """Insert a baseline's rules in the registrar's namespace (in order, first rule first)."""
    for position, (table, chain, spec) in enumerate(rules(defence), start=1):
        topo.run_in(topo.registrar_ns, ["iptables", "-w", "-t", table, "-I", chain,
                                        str(position), *spec])


def remove(topo: Topology, defence: str) -> None:
    """Delete a baseline's rules (those that are there)."""
    for table, chain, spec in rules(defence):
        topo.run_in(topo.registrar_ns, ["iptables", "-w", "-t", table, "-D", chain, *spec],
                    check=False)
