"""Counter sampler, run inside the registrar's namespace for the length of one scenario:

    python -m floodguard.lab.sampler [-c CONFIG] --interval 1

prints one JSON line per interval (and a last one when it stops): ``{"t": wall, "kernel":
{layer: packets}, "reach": {"attackers": n, "botnet": n, "phones": n, "office-attackers": n,
"office": n}, "udp": {...}, "sent": n}`` with running totals. ``sent`` is the attackers'
counting chains (``--sent-netns``: the attackers' namespace, and the office's, where it counts
what the office's other hosts send, the stale phone and the guesser), read in the same breath
so all the series share one clock. ``kernel`` sums the packet
counters of floodguard's DROP rules per layer (read with ``floodguard.kernel.firewall.status``,
the same data as ``floodguard show``); ``reach`` is read from the lab's own counting chain in the
``security`` table, whose INPUT hook runs after the filter table, so it counts what got past
every floodguard layer (the guard's accepted verdicts included) and was handed to the host for
the registrar. Without ``-c`` (unprotected runs) only ``reach`` is sampled. Stops on SIGTERM or
when stdin closes.
"""

from __future__ import annotations

import argparse
import json
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from floodguard.lab.topology import (
    ATTACKER_NET,
    BOTNET_NET,
    OFFICE_HOST_PORTS,
    OFFICE_HOSTS_NET,
    OFFICE_IP,
    PHONE_NET,
    Topology,
)

REACH_CHAIN = "FGLAB-REACH"
SENT_CHAIN = "FGLAB-SENT"
# Each group's match; the office's NAT puts its other hosts (the stale phone, the guesser) in
# their own port block, so what they get through is told from what its phones do.
REACH_RULES = {
    "attackers": ["-s", ATTACKER_NET],
    "botnet": ["-s", BOTNET_NET],
    "phones": ["-s", PHONE_NET],
    "office-attackers": ["-s", f"{OFFICE_IP}/32", "-p", "udp", "-m", "udp", "--sport",
                         "{}:{}".format(*OFFICE_HOST_PORTS)],
    "office": ["-s", f"{OFFICE_IP}/32"],
}
LAYERS = ("ban", "scanner", "register-limit", "sip-limit", "budget", "token-class", "gateway",
          "tcp", "other")


def layer_of(rule: Mapping[str, Any]) -> str | None:
    """The defence layer a floodguard rule stands for, or None when it does not drop."""
    spec = str(rule.get("rule", ""))
    if "-j DROP" not in spec:
        return None
    if "floodguard-ban" in spec:
        return "ban"
    # the limits first: the REGISTER limit matches its method with a string match, any case
    if "--hashlimit-name fg-reg" in spec:
        return "register-limit"
    if "--hashlimit-name fg-sip" in spec:
        return "sip-limit"
    if "--hashlimit-name fg-bud" in spec:
        return "budget"
    if "--hashlimit-name fg-pro" in spec:  # the budget class of answers to challenges
        return "token-class"
    if "--icase" in spec and "-m string" in spec:
        return "scanner"
    if spec.startswith("-s ") or " -s " in spec:
        return "gateway"
    if "-p tcp" in spec:
        return "tcp"
    return "other"


def kernel_drops(rules: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Packets dropped per layer, summed over both families and every port."""
    out = dict.fromkeys(LAYERS, 0)
    for rule in rules:
        layer = layer_of(rule)
        if layer is not None:
            out[layer] += int(rule.get("packets", 0))
    return out


_SAVE_LINE = re.compile(r"^\[(\d+):(\d+)\] -A (\S+) (.*)$")


def reach_rules() -> list[list[str]]:
    """The counting rules (iptables arguments after the chain name), in order: a packet is
    counted by the first that matches, named by its comment."""
    out = []
    for name, match in REACH_RULES.items():
        udp = [] if "udp" in match else ["-p", "udp", "-m", "udp"]
        out.append([*match, *udp, "--dport", "5060", "-m", "comment", "--comment", name,
                    "-j", "RETURN"])
    return out


def install_counters(topo: Topology) -> None:
    """The counting chains this sampler reads: what the attackers send (their OUTPUT) and what
    reaches the registrar (the registrar host's ``security`` INPUT); replaces any left over."""
    def iptables(ns: str, *args: str) -> None:
        topo.run_in(ns, ["iptables", "-w", *args], check=True)

    reg = topo.registrar_ns
    remove_counters(topo)
    for ns, source in ((topo.attackers_ns, []), (topo.office_ns, ["-s", OFFICE_HOSTS_NET])):
        iptables(ns, "-N", SENT_CHAIN)
        iptables(ns, "-A", SENT_CHAIN, *source, "-p", "udp", "-m", "udp", "--dport", "5060",
                 "-j", "RETURN")
        iptables(ns, "-I", "OUTPUT", "1", "-j", SENT_CHAIN)
    iptables(reg, "-t", "security", "-N", REACH_CHAIN)
    for rule in reach_rules():
        iptables(reg, "-t", "security", "-A", REACH_CHAIN, *rule)
    iptables(reg, "-t", "security", "-I", "INPUT", "1", "-j", REACH_CHAIN)


def remove_counters(topo: Topology) -> None:
    """Remove the counting chains (those that are there)."""
    for ns, table, chain in ((topo.attackers_ns, "filter", SENT_CHAIN),
                             (topo.office_ns, "filter", SENT_CHAIN),
                             (topo.registrar_ns, "security", REACH_CHAIN)):
        builtin = "OUTPUT" if chain == SENT_CHAIN else "INPUT"
        while topo.run_in(ns, ["iptables", "-w", "-t", table, "-D", builtin, "-j", chain],
                          check=False).returncode == 0:
            pass
        topo.run_in(ns, ["iptables", "-w", "-t", table, "-F", chain], check=False)
        topo.run_in(ns, ["iptables", "-w", "-t", table, "-X", chain], check=False)


def parse_reach(save_text: str) -> dict[str, int]:
    """Packets per source group from ``iptables-save -c -t security`` output (each rule is
    named by its comment)."""
    out = dict.fromkeys(REACH_RULES, 0)
    for line in save_text.splitlines():
        match = _SAVE_LINE.match(line)
        if not match or match.group(3) != REACH_CHAIN:
            continue
        parts = match.group(4).split()
        if "--comment" in parts:
            name = parts[parts.index("--comment") + 1].strip('"')
            if name in out:
                out[name] += int(match.group(1))
    return out


def parse_sent(save_text: str) -> int:
    """Packets counted by the attackers' counting chain in ``iptables-save -c`` output."""
    total = 0
    for line in save_text.splitlines():
        match = _SAVE_LINE.match(line)
        if match and match.group(3) == SENT_CHAIN:
            total += int(match.group(1))
    return total


def sample(cfg: Any | None, sent_netns: Iterable[str] = ()) -> dict[str, Any]:
    """One reading of every counter. What was sent is read first: a packet counted as sent
    has then already met the registrar host's rules when those are read."""
    record: dict[str, Any] = {"t": time.time()}
    for ns in sent_netns:
        text = subprocess.run(["ip", "netns", "exec", ns, "iptables-save", "-c", "-t",
                               "filter"], capture_output=True, text=True).stdout
        record["sent"] = record.get("sent", 0) + parse_sent(text)
    if cfg is not None:
        from floodguard.kernel import firewall

        status = firewall.status(cfg, "auto")
        record["kernel"] = kernel_drops(status.get("rules", []))
        record["sets"] = {s.get("name"): s.get("entries") for s in status.get("sets", [])
                          if isinstance(s, dict)}
    text = subprocess.run(["iptables-save", "-c", "-t", "security"], capture_output=True,
                          text=True).stdout
    record["reach"] = parse_reach(text)
    record["udp"] = udp_counters()
    return record


def udp_counters(path: str = "/proc/net/snmp") -> dict[str, int]:
    """This namespace's UDP counters: datagrams delivered to sockets, and dropped because a
    socket's receive buffer was full (``RcvbufErrors``: the registrar not keeping up)."""
    try:
        text = Path(path).read_text(encoding="ascii")
        lines = [ln.split() for ln in text.splitlines() if ln.startswith("Udp:")]
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    values = dict(zip(lines[0][1:], lines[1][1:], strict=False))
    return {"in": int(values.get("InDatagrams", 0)),
            "rcvbuf_errors": int(values.get("RcvbufErrors", 0))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m floodguard.lab.sampler")
    ap.add_argument("-c", "--config", default=None)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--sent-netns", action="append", default=[],
                    help="namespace whose FGLAB-SENT chain counts attack packets sent (repeat)")
    args = ap.parse_args(argv)
    cfg = None
    if args.config:
        from floodguard import config as configmod

        cfg = configmod.load(args.config)
    stop = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    next_at = time.monotonic()
    while not stop:
        sys.stdout.write(json.dumps(sample(cfg, args.sent_netns), separators=(",", ":")) + "\n")
        sys.stdout.flush()
        next_at += args.interval
        wait = max(0.0, next_at - time.monotonic())
        ready, _, _ = select.select([sys.stdin], [], [], wait)
        if ready and not sys.stdin.readline():
            break
    sys.stdout.write(json.dumps(sample(cfg, args.sent_netns), separators=(",", ":")) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
