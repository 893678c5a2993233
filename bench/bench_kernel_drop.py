"""Kernel drop capacity (issue 15, item 3): what one dropped flood packet costs the receiver.

Run as root: ``python bench/bench_kernel_drop.py [--quick] [--json]``. A few minutes; ``--quick``
well under one. Everything runs in two network namespaces created here (``fgkd-<random>-tx`` /
``-rx``, joined by a veth pair, addresses 10.x only inside them) and removed afterwards, also on
error or Ctrl-C. No traffic generator is needed: the sender is this file (``send`` below), one
process per CPU, each pinned, writing prebuilt Ethernet frames (IPv4, UDP to 5060, a 400-byte
REGISTER with a phone's user agent, spoofed sources, valid checksums) to an AF_PACKET socket on
the sending veth as fast as it can.

A frame written to a veth is received by the peer in the sender's own softirq (netif_rx, then
NET_RX when the send re-enables bottom halves), so the receiver's whole cost for a packet, from
the veth through ip_rcv and netfilter to the drop, is spent on the sending CPU. Two figures per
cell, both from the same run:

  (1) drop capacity = packets dropped by the receiver's rules / softirq CPU-seconds, packets from
      the rules' own counters (``iptables-nft-save -c``), softirq time from the ``softirq`` column
      of /proc/stat summed over every CPU (tick-sampled), read right before the senders start
      and after they stop: how many packets per second one CPU doing nothing but receiving could
      drop. /proc/stat is the host's, so other work on the machine adds to it.
  (2) receive cost = the senders' own CPU time per packet (getrusage: their Python loop, the
      send, and the softirq that ran in them) minus the same for frames addressed to a MAC
      nobody has (``otherhost``: dropped before IP), i.e. what ip_rcv, netfilter and the drop
      cost; capacity = 1e9 / cost. Less exposed to the rest of the machine than (1).

Cells are interleaved in rounds and each figure is the median over the rounds; the report gives
ratios of medians side by side, never thresholds. The ``banned`` flood is dropped by the same
rules in the new and the old order, so its new/old ratio shows the noise of the run.

Cells, each flood against each ruleset:

  rulesets  single   one rule, ``-t raw -A PREROUTING -p udp --dport 5060 -j DROP`` (and no
                     conntrack in that namespace: nothing there asks for it)
            new      floodguard's ruleset as rendered from floodguard/rules/ now (defaults,
                     budget 1000/s, IPv4 part)
            old      the same config rendered from the newest committed ruleset.toml that
                     has no FLOODGUARD-LIMIT chain (``--old-rev`` to choose another), i.e. every
                     limit in filter after conntrack and after the five scanner searches
  floods    banned   4,096 sources, every one in the ban set: the ban set drops it (raw in both)
            loud     16 sources far over their per-source limits: the REGISTER limit drops it
            spread   65,536 sources, each under its per-source limits: the budget drops it

Prints both tables and one JSON line with every cell (``--json``: only the JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import secrets
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "floodguard" / "rules"
sys.path.insert(0, str(ROOT))

RX_ADDR, TX_ADDR = "10.251.0.1", "10.251.0.2"
FLOODS = {  # name: (first source, number of sources)
    "banned": ("10.252.0.0", 4096),
    "loud": ("10.253.0.0", 16),
    "spread": ("10.254.0.0", 65536),
}
RULESETS = ("otherhost", "single", "new", "old")
NOWHERE_MAC = bytes.fromhex("020000000001")  # the otherhost baseline: no one's address
CONFIG = "[limits]\nqueue_budget = 1000\n"


# ---------------------------------------------------------------- the sender (runs in tx)


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frames(dst_mac: bytes, src_mac: bytes, first: str, count: int) -> list[bytes]:
    """One frame per source from ``first`` on, repeated up to at least 1024 frames."""
    from floodguard.sip import build

    payload = build.register(f"{RX_ADDR}:5060", user="100", local="10.252.0.1:5060",
                             call_id="flood@10.252.0.1", cseq=1, expires=None,
                             user_agent="Yealink SIP-T46S 66.86.0.15", branch="z9hG4bK-flood",
                             rport=True, tag="fl00d")
    base = int.from_bytes(socket.inet_aton(first), "big")
    dst = socket.inet_aton(RX_ADDR)
    ether = dst_mac + src_mac + b"\x08\x00"
    udp_len = 8 + len(payload)
    out = []
    for i in range(max(count, 1024)):
        src = (base + i % count).to_bytes(4, "big")
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, i & 0xFFFF, 0x4000, 64, 17, 0,
                         src, dst)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        udp = struct.pack("!HHHH", 5060, 5060, udp_len, 0)  # UDP checksum 0: none (IPv4)
        out.append(ether + ip + udp + payload)
    return out


def send(args: argparse.Namespace) -> None:
    """Build the frames, print "ready", wait for a line on stdin, send for --seconds."""
    os.sched_setaffinity(0, {args.cpu})
    first, count = FLOODS[args.flood]
    batch = frames(bytes.fromhex(args.dst_mac), bytes.fromhex(args.src_mac), first, count)
    chunks = [batch[i:i + 1024] for i in range(0, len(batch), 1024)]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((args.iface, 0))
    out, clock = sock.send, time.monotonic
    print("ready", flush=True)
    sys.stdin.readline()
    sent = errors = 0
    before = resource.getrusage(resource.RUSAGE_SELF)
    deadline = clock() + args.seconds
    while clock() < deadline:
        for chunk in chunks:
            for frame in chunk:
                try:
                    out(frame)
                except OSError:
                    errors += 1
            sent += len(chunk)
            if clock() >= deadline:
                break
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    print(json.dumps({"sent": sent - errors, "errors": errors, "cpu_s": cpu}), flush=True)


# ---------------------------------------------------------------- namespaces and rules


def sh(*argv: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stdout}{result.stderr}")
    return result.stdout


@contextlib.contextmanager
def namespaces() -> Iterator[tuple[str, str, str, bytes, bytes]]:
    """(rx, tx, tx interface, rx MAC, tx MAC); both namespaces removed afterwards."""
    tag = secrets.token_hex(3)
    rx, tx = f"fgkd-{tag}-rx", f"fgkd-{tag}-tx"
    veth_rx, veth_tx = f"fgkd{tag}r", f"fgkd{tag}t"
    try:
        for name in (rx, tx):
            sh("ip", "netns", "add", name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", rx, "link", "add", veth_rx, "type", "veth", "peer", "name", veth_tx,
           "netns", tx)
        sh("ip", "-n", rx, "addr", "add", f"{RX_ADDR}/16", "dev", veth_rx)
        sh("ip", "-n", tx, "addr", "add", f"{TX_ADDR}/16", "dev", veth_tx)
        for name, dev in ((rx, veth_rx), (tx, veth_tx)):
            sh("ip", "-n", name, "link", "set", dev, "up")
        # the few packets that pass the limits are answered like any other (routes back)
        sh("ip", "-n", rx, "route", "add", "10.252.0.0/14", "dev", veth_rx)
        for key in ("all", "default", veth_rx):
            sh("ip", "netns", "exec", rx, "sysctl", "-qw", f"net.ipv4.conf.{key}.rp_filter=0")
        macs = [bytes.fromhex(json.loads(sh("ip", "-n", ns, "-j", "link", "show", dev))[0]
                              ["address"].replace(":", "")) for ns, dev in
                ((rx, veth_rx), (tx, veth_tx))]
        yield rx, tx, veth_tx, macs[0], macs[1]
    finally:
        for name in (tx, rx):
            sh("ip", "netns", "del", name, check=False)


def old_rules_dir(rev: str | None, into: Path) -> str:
    """The templates with ruleset.toml from ``rev`` (default: newest without FLOODGUARD-LIMIT)."""
    for name in ("sets.toml", "tunables.toml"):
        (into / name).write_text((RULES / name).read_text())
    # (commit, its path then): the templates lived in rules/ before they became package data
    log = sh("git", "-C", str(ROOT), "log", "--follow", "--format=%h", "--name-only", "--",
             "floodguard/rules/ruleset.toml").split()
    revs = list(zip(log[::2], log[1::2], strict=True))
    if rev:
        revs = [(rev, "floodguard/rules/ruleset.toml"), (rev, "rules/ruleset.toml")]
    for candidate, path in revs:
        text = sh("git", "-C", str(ROOT), "show", f"{candidate}:{path}", check=False)
        if text and (rev or "FLOODGUARD-LIMIT" not in text):
            (into / "ruleset.toml").write_text(text)
            return candidate
    raise RuntimeError("no committed ruleset.toml " + (f"at {rev}" if rev else
                                                      "without FLOODGUARD-LIMIT"))


def install(rx: str, ruleset: str, flood: str, old_dir: Path) -> None:
    """Flush rx, then install ``ruleset`` (and the ban set's members for the banned flood)."""
    from floodguard.config import loads
    from floodguard.kernel.rules import ipset_text, plan_table, render, restore_text
    from floodguard.kernel.ruleset import TableState

    netns = ("ip", "netns", "exec", rx)
    sh(*netns, "nft", "flush", "ruleset")
    sh(*netns, "ipset", "destroy", check=False)
    sh(*netns, "conntrack", "-F", check=False)
    if ruleset == "otherhost":
        return
    if ruleset == "single":
        sh(*netns, "iptables-nft", "-t", "raw", "-A", "PREROUTING", "-p", "udp", "--dport",
           "5060", "-j", "DROP")
        return
    rules = render(loads(CONFIG), old_dir if ruleset == "old" else None)
    sets = ipset_text(rules)
    if flood == "banned":
        first, count = FLOODS[flood]
        base = int.from_bytes(socket.inet_aton(first), "big")
        sets += "".join(f"add floodguard-ban {socket.inet_ntoa((base + i).to_bytes(4, 'big'))}\n"
                        for i in range(count))
    sh(*netns, "ipset", "restore", stdin=sets)
    plans = [plan_table(t, TableState(), rules.state(4, t)) for t in rules.tables(4)]
    sh(*netns, "iptables-nft-restore", "--noflush", stdin=restore_text(plans))


def drops_by_rule(rx: str) -> dict[str, int]:
    """Packets counted by each DROP rule in rx, by a short name of the rule."""
    out: dict[str, int] = {}
    for line in sh("ip", "netns", "exec", rx, "iptables-nft-save", "-c").splitlines():
        if line.startswith("[") and line.rstrip().endswith("-j DROP"):
            name = next((n for key, n in (("floodguard-ban", "ban"), ("fg-reg-", "register"),
                                          ("fg-sip-", "sip"), ("fg-bud-", "budget"),
                                          ("--icase", "scanner")) if key in line), "other")
            out[name] = out.get(name, 0) + int(line[1:line.index(":")])
    return out


def softirq_ticks() -> int:
    with open("/proc/stat", encoding="ascii") as stat:
        fields = stat.readline().split()
    return int(fields[7])  # cpu user nice system idle iowait irq softirq


def run_cell(rx: str, tx: str, iface: str, rx_mac: bytes, tx_mac: bytes, flood: str,
             seconds: float, ruleset: str) -> dict[str, Any]:
    if ruleset == "otherhost":
        rx_mac = NOWHERE_MAC
    cpus = sorted(os.sched_getaffinity(0))
    senders = [subprocess.Popen(
        ["ip", "netns", "exec", tx, sys.executable, __file__, "send", "--iface", iface,
         "--dst-mac", rx_mac.hex(), "--src-mac", tx_mac.hex(), "--flood", flood,
         "--cpu", str(cpu), "--seconds", str(seconds)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for cpu in cpus]
    for proc in senders:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    before_drops, before_ticks, start = drops_by_rule(rx), softirq_ticks(), time.monotonic()
    for proc in senders:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    sent, sender_cpu = 0, 0.0
    for proc in senders:
        out, _ = proc.communicate(timeout=seconds + 60)
        result = json.loads(out.strip().splitlines()[-1])
        sent, sender_cpu = sent + result["sent"], sender_cpu + result["cpu_s"]
    ticks, wall = softirq_ticks() - before_ticks, time.monotonic() - start
    by_rule = {k: v - before_drops.get(k, 0) for k, v in drops_by_rule(rx).items()}
    drops = sum(by_rule.values())
    cpu_seconds = ticks / os.sysconf("SC_CLK_TCK")
    top = max(by_rule, key=by_rule.__getitem__, default="")
    return {"sent": sent, "dropped": drops, "by": top,
            "softirq_s": round(cpu_seconds, 3),
            "wall_s": round(wall, 3), "ns_per_packet": 1e9 * sender_cpu / max(sent, 1),
            "capacity": drops / cpu_seconds if cpu_seconds > 0 else float("nan")}


# ---------------------------------------------------------------- the report


def _table(rows: dict[str, dict[str, float]], fmt: str,
           notes: dict[str, dict[str, str]] | None = None) -> None:
    print(f"{'flood':8} {'single':>10} {'new':>10} {'old':>10} {'new/single':>11} "
          f"{'old/single':>11} {'new/old':>8}")
    for flood, row in rows.items():
        cells = " ".join(fmt.format(row[r]) for r in ("single", "new", "old"))
        extra = f"   ({', '.join(notes[flood].values())})" if notes else ""
        print(f"{flood:8} {cells} {row['new'] / row['single']:11.2f} "
              f"{row['old'] / row['single']:11.2f} {row['new'] / row['old']:8.2f}{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command")
    sender = sub.add_parser("send")
    for option in ("--iface", "--dst-mac", "--src-mac", "--flood"):
        sender.add_argument(option, required=True)
    sender.add_argument("--cpu", type=int, required=True)
    sender.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--old-rev", default=None)
    args = parser.parse_args()
    if args.command == "send":
        send(args)
        return
    if os.geteuid() != 0:
        raise SystemExit("run as root (network namespaces)")
    rounds, seconds = (1, 1.5) if args.quick else (3, 4.0)
    cells: dict[str, dict[str, list[dict[str, Any]]]] = {
        f: {r: [] for r in RULESETS} for f in FLOODS}
    with tempfile.TemporaryDirectory() as tmp, namespaces() as (rx, tx, iface, rmac, tmac):
        old = old_rules_dir(args.old_rev, Path(tmp))
        for _ in range(rounds):
            for flood in FLOODS:
                for ruleset in RULESETS:
                    install(rx, ruleset, flood, Path(tmp))
                    cells[flood][ruleset].append(
                        run_cell(rx, tx, iface, rmac, tmac, flood, seconds, ruleset))
    report: dict[str, object] = {"old_rev": old, "rounds": rounds, "seconds": seconds,
                                 "cpus": len(os.sched_getaffinity(0)), "cells": cells}
    dropping = RULESETS[1:]
    softirq = {f: {r: statistics.median(c["capacity"] for c in cells[f][r]) for r in dropping}
               for f in FLOODS}
    # the sender's own CPU per packet (Python, the send, and the receive in its softirq) minus
    # the same for frames the receiver throws away before IP: what the receive path costs
    base = {f: statistics.median(c["ns_per_packet"] for c in cells[f]["otherhost"])
            for f in FLOODS}
    receive = {f: {r: statistics.median(c["ns_per_packet"] for c in cells[f][r]) - base[f]
                   for r in dropping} for f in FLOODS}
    report["softirq_capacity"] = softirq
    report["receive_ns"] = receive
    report["otherhost_ns"] = base
    if not args.json:
        print(f"old = ruleset.toml at {old}; median of {rounds} round(s) of "
              f"{seconds} s per cell, {report['cpus']} senders")
        print("\n(1) drop capacity, packets dropped per softirq CPU-second (/proc/stat)")
        _table({f: {r: v for r, v in row.items()} for f, row in softirq.items()}, "{:10.0f}")
        print("\n(2) receive cost, sender CPU ns per packet above frames dropped before IP "
              f"(otherhost: {', '.join(f'{f} {v:.0f}' for f, v in base.items())} ns); "
              "capacity = 1e9 / cost")
        _table({f: {r: 1e9 / v if v > 0 else float("nan") for r, v in row.items()}
                for f, row in receive.items()}, "{:10.0f}",
               {f: {r: f"{v:.0f} ns" for r, v in row.items()} for f, row in receive.items()})
        for flood in FLOODS:
            for ruleset in RULESETS:
                last = cells[flood][ruleset][-1]
                print(f"  {flood}/{ruleset}: sent {last['sent']:.0f} dropped "
                      f"{last['dropped']:.0f} (most by {last['by'] or '-'}) softirq "
                      f"{last['softirq_s']} s in "
                      f"{last['wall_s']} s, {last['ns_per_packet']:.0f} ns/packet at the sender")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
