"""Fleet throughput: one node publishes N bans/s; do the other nodes keep up? (needs root)

Three guards' fleet links (a publisher and two receivers by default), each in a network
namespace of its own with its own kernel sets and state store, share one redis-server (Debian
package) through a Unix socket. A generator writes bans and their journal rows into the
publisher's store at the offered rate (default 10,000/s for 10 s; ``--writer put_ban`` uses
``Store.put_ban`` per ban as guard workers do, which alone costs ~0.75 CPU at 10,000/s); the
publisher's link pushes them from the journal, the receivers' links apply them to their kernel
sets (a raw netlink message per entry) and stores (a transaction per batch).

Reported: the generator's achieved rate, the publisher's pushes, and per receiver the bans
applied, the rate while the generator ran, the catch-up time after it stopped, and the lag from
the publisher's store write to the receiver's kernel set (p50/p99/max over every ban). A
receiver keeps up when it applies everything at the offered rate and its lag stays bounded
(p99 under a second) instead of growing with the run.

Usage: ``sudo .venv/bin/python bench/bench_fleet.py [--rate 10000] [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

HERE = Path(__file__).resolve()


# ---------------------------------------------------------------- roles (run as subprocesses)


def node_main(args: argparse.Namespace) -> int:
    """A fleet link as the supervisor runs it; prints progress lines, then a summary."""
    from floodguard.config import loads
    from floodguard.events import EventLog
    from floodguard.fleet import link as fleet  # FleetLink, count_set, RECENT_LAGS
    from floodguard.kernel.ipset import SetManager
    from floodguard.kernel.rules import render
    from floodguard.store import Store

    fleet.RECENT_LAGS = 10_000_000  # keep every lag for exact quantiles
    cfg = loads(f'[state]\npath = "{args.state}"\n[fleet]\nredis_url = "{args.url}"\n'
                f'node = "{args.name}"\n')
    events = EventLog(io.StringIO(), json_mode=True)  # events off the measurement path
    link = fleet.FleetLink(cfg, events, lambda: Store(cfg.state.path),
                           lambda: SetManager(render(cfg).sets))
    link.load(5.0)
    link.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(json.dumps({"ready": True}), flush=True)
    cpu0 = _cpu()
    while not stop.wait(0.25):
        print(json.dumps({"t": time.time(), "bans": link.counts["bans"],
                          "pushed": link.counts["pushed"], "up": link.up}), flush=True)
    cpu = _cpu() - cpu0
    link.stop()
    lags = sorted(link.recent)
    sets = SetManager(render(cfg).sets)
    summary = {"done": True, "counts": link.counts, "set_entries": fleet.count_set(sets),
               "lags": len(lags), "reconnects": link.reconnects, "last_error": link.last_error,
               "cpu": cpu}
    if lags:
        summary.update(p50=lags[len(lags) // 2], p99=lags[min(len(lags) - 1,
                                                              int(0.99 * len(lags)))],
                       max=lags[-1])
    print(json.dumps(summary), flush=True)
    return 0


def _cpu() -> float:
    """CPU seconds of this process (and of any children it waited for)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _redis_cpu(sock: Path) -> float:
    from redis import Redis

    info = Redis(unix_socket_path=str(sock)).info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def gen_main(args: argparse.Namespace) -> int:
    """Writes bans into a store at the offered rate (10 ms ticks).

    ``put_ban``: one ``Store.put_ban`` per ban, as a guard worker does (a commit each, ~75 µs).
    ``sql``: the same rows (bans and journal) in one transaction per tick, so that the offered
    rate holds on a small box and the CPU goes to the fleet links under test.
    """
    from floodguard.store import Store

    store = Store(args.state)
    total = int(args.rate * args.seconds)
    first = args.first
    per_tick = max(1, int(args.rate / 100))
    started = time.monotonic()
    done = 0
    while done < total:
        batch = []
        for n in range(first + done, first + min(total, done + per_tick)):
            batch.append(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}")
        if args.writer == "put_ban":
            for ip in batch:
                store.put_ban(ip, "blacklist", "spraying", 600, failures=5)
        else:
            now = time.time()
            with store.db:
                store.db.execute("BEGIN")
                store.db.executemany(
                    "INSERT OR REPLACE INTO bans(ip, kind, reason, aor, failures, created, "
                    "until) VALUES (?, 'blacklist', 'spraying', NULL, 5, ?, ?)",
                    [(ip, now, now + 600) for ip in batch])
                store.db.executemany(
                    "INSERT INTO journal(op, ip, kind, reason, aor, failures, until, created) "
                    "VALUES ('ban', ?, 'blacklist', 'spraying', NULL, 5, ?, ?)",
                    [(ip, now + 600, now) for ip in batch])
        done += len(batch)
        ahead = started + done / args.rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    elapsed = time.monotonic() - started
    print(json.dumps({"bans": done, "seconds": elapsed, "rate": done / elapsed}), flush=True)
    return 0


# ---------------------------------------------------------------- controller


class Proc:
    """A role subprocess whose JSON lines are collected by a thread."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[dict[str, Any]] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.append(json.loads(line))

    def last(self, key: str) -> dict[str, Any] | None:
        return next((line for line in reversed(self.lines) if key in line), None)

    def wait_for(self, key: str, seconds: float) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            found = self.last(key)
            if found is not None:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        err = self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""
        raise SystemExit(f"{' '.join(self.proc.args)}: no {key!r} line\n{err}")


def require(tool: str) -> None:
    if shutil.which(tool) is None:
        raise SystemExit(f"{tool} is missing: run `sudo make deps`")


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise SystemExit("bench_fleet needs root (network namespaces, ipsets)")
    for tool in ("redis-server", "ip", "ipset"):
        require(tool)
    tmp = Path(tempfile.mkdtemp(prefix="fleetbench-"))
    sock = tmp / "redis.sock"
    redis = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", str(tmp), "--logfile",
         str(tmp / "redis.log")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"unix://{sock}?db=0"
    tag = secrets.token_hex(3)
    names = ["pub", *(f"r{i}" for i in range(1, args.receivers + 1))]
    namespaces = [f"fgb-{tag}-{name}" for name in names]
    procs: list[Proc] = []
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if time.monotonic() > deadline:
                raise SystemExit("redis-server did not start")
            time.sleep(0.02)
        for ns in namespaces:
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"],
                           check=True)
        nodes = {}
        for name, ns in zip(names, namespaces, strict=True):
            nodes[name] = Proc(["ip", "netns", "exec", ns, sys.executable, str(HERE), "node",
                                "--name", name, "--state", str(tmp / f"{name}.db"),
                                "--url", url])
            procs.append(nodes[name])
        for node in nodes.values():
            node.wait_for("ready", 20)
        time.sleep(1.0)  # first re-sync done everywhere
        total = int(args.rate * args.seconds)
        print(f"offered: {args.rate:,.0f} bans/s for {args.seconds:g} s = {total:,} bans, "
              f"{args.receivers} receivers, Redis over a Unix socket, {os.cpu_count()} CPUs")
        started = time.time()
        redis_cpu = _redis_cpu(sock)
        share = int(args.rate * args.seconds) // args.writers
        gens = [Proc([sys.executable, str(HERE), "gen", "--state", str(tmp / "pub.db"),
                      "--rate", str(args.rate / args.writers), "--seconds", str(args.seconds),
                      "--writer", args.writer, "--first", str(i * share)])
                for i in range(args.writers)]
        procs.extend(gens)
        ends = [g.wait_for("rate", args.seconds * 5 + 30) for g in gens]
        gen_end = time.time()
        generated = {"bans": sum(e["bans"] for e in ends),
                     "seconds": max(e["seconds"] for e in ends)}
        generated["rate"] = generated["bans"] / generated["seconds"]
        total = generated["bans"]
        receivers = {n: p for n, p in nodes.items() if n != "pub"}
        caught: dict[str, float | None] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(caught) < len(receivers):
            for name, node in receivers.items():
                progress = node.last("bans")
                if name not in caught and progress and progress["bans"] >= total:
                    caught[name] = progress["t"]
            time.sleep(0.05)
        during: dict[str, int] = {}
        for name, node in receivers.items():
            before = [ln for ln in node.lines if "bans" in ln and ln["t"] <= gen_end]
            during[name] = before[-1]["bans"] if before else 0
        redis_cpu = _redis_cpu(sock) - redis_cpu
        for node in nodes.values():
            node.proc.send_signal(signal.SIGTERM)
        finals = {name: node.wait_for("done", 30) for name, node in nodes.items()}
        span = generated["seconds"]
        print(f"published: {generated['bans']:,} bans in {span:.2f} s = "
              f"{generated['rate']:,.0f}/s ({args.writers} writer processes, {args.writer})")
        pub = finals["pub"]
        print(f"publisher: pushed {pub['counts']['pushed']:,} changes to Redis; CPU "
              f"{pub['cpu'] / total * 1e6:.0f} µs a ban; Redis CPU "
              f"{redis_cpu / total * 1e6:.0f} µs a ban")
        print(f"{'receiver':<9} {'applied':>9} {'in set':>9} {'rate while gen':>15} "
              f"{'catch-up':>9} {'lag p50':>8} {'lag p99':>8} {'lag max':>8} {'CPU/ban':>8}")
        for name in receivers:
            final = finals[name]
            rate = during[name] / max(1e-3, gen_end - started)
            catch = (f"{caught[name] - gen_end:+.2f} s" if caught.get(name) else "NEVER")
            print(f"{name:<9} {final['counts']['bans']:>9,} {final['set_entries'] or 0:>9,} "
                  f"{rate:>13,.0f}/s {catch:>9} {final.get('p50', 0) * 1000:>6.0f}ms "
                  f"{final.get('p99', 0) * 1000:>6.0f}ms {final.get('max', 0) * 1000:>6.0f}ms "
                  f"{final['cpu'] / max(1, final['counts']['bans']) * 1e6:>6.0f}µs")
        for name, final in finals.items():
            if final["reconnects"] or final["last_error"]:
                print(f"{name}: {final['reconnects']} reconnects, last error "
                      f"{final['last_error']}")
        load = os.getloadavg()[0]
        print(f"host load average (1 min) at the end: {load:.1f} on {os.cpu_count()} CPUs")
        kept_up = all(caught.get(n) and finals[n].get("p99", 9) < 1.0 for n in receivers)
        print("receivers kept up" if kept_up else "receivers did NOT keep up")
        return 0 if kept_up else 1
    finally:
        for proc in procs:
            if proc.proc.poll() is None:
                proc.proc.kill()
            proc.proc.wait()
        for ns in namespaces:
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
        redis.terminate()
        redis.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role")
    node = sub.add_parser("node")
    node.add_argument("--name", required=True)
    node.add_argument("--state", required=True)
    node.add_argument("--url", required=True)
    gen = sub.add_parser("gen")
    gen.add_argument("--state", required=True)
    gen.add_argument("--rate", type=float, required=True)
    gen.add_argument("--seconds", type=float, required=True)
    gen.add_argument("--writer", choices=["sql", "put_ban"], default="sql")
    gen.add_argument("--first", type=int, default=0)
    parser.add_argument("--rate", type=float, default=10000.0, help="bans per second offered")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--receivers", type=int, default=2)
    parser.add_argument("--writers", type=int, default=1,
                        help="processes writing the bans on the publisher (as queue workers)")
    parser.add_argument("--writer", choices=["sql", "put_ban"], default="sql",
                        help="sql: one transaction per 10 ms tick; put_ban: Store.put_ban "
                             "per ban, as the guard (CPU-bound near 10,000/s on a small box)")
    args = parser.parse_args()
    if args.role == "node":
        return node_main(args)
    if args.role == "gen":
        return gen_main(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
