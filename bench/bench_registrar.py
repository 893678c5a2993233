"""Registrar benchmarks, side by side with Kamailio in one run (needs root, sipp, kamailio).

1. Throughput: the same SIPp REGISTER scenario with digest auth (tests/assets/register.xml,
   10 accounts) against floodguard's registrar and against Kamailio (tests/assets/kamailio.cfg)
   at increasing offered loads. A load is sustained when every call succeeded and SIPp kept the
   offered rate (a failed load is retried once, as the host may be busy with other work); the
   report gives the highest sustained load of each, the ratio, and the CPU per registration.
   `drops` counts datagrams a full socket buffer dropped in the namespace (SIPp's buffers are
   set as large as a proxy's, see SIPP_BUFFER).
2. Liveness: 10,000 bindings at time_to_live = 60 s, answered by a UDP responder that keeps one
   endpoint unplugged. Prints the per-second OPTIONS histogram (mean/stdev/min/max), the
   registrar's CPU over the interval, and how long the unplugged endpoint took to go offline.

Everything runs inside a private network namespace on its loopback, so the host's firewall and
ports are untouched. Usage: `sudo .venv/bin/python bench/bench_registrar.py [--quick]`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from floodguard.registrar.bindings import Binding, BindingTable  # noqa: E402
from floodguard.sip import build  # noqa: E402

PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv/bin/python").exists() \
    else sys.executable
SCENARIO = REPO / "tests" / "assets" / "register.xml"
KAMAILIO_CFG = REPO / "tests" / "assets" / "kamailio.cfg"
USERS = [str(u) for u in range(1001, 1011)]
OURS_PORT, KAMAILIO_PORT, LIVENESS_PORT, RESPONDER_PORT = 5060, 5070, 5080, 5090
CLK_TCK = os.sysconf("SC_CLK_TCK")
# SIPp's socket buffers, as large as a proxy's: with SIPp's default (64 KiB) the one socket that
# stands for every phone overflows whenever SIPp is off the CPU for a few ms on this 2-core
# host, and the drops (UdpRcvbufErrors, SIPp's retransmissions) measured SIPp, not the server.
SIPP_BUFFER = 4 * 1024 * 1024


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{current}/task/{current}/children").read_text().split():
                todo.append(int(child))
    return out


def in_netns(ns: str, fn, *args):
    box: dict = {}
    libc = ctypes.CDLL(None, use_errno=True)

    def target() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if libc.setns(fd, 0x40000000) != 0:
                    raise OSError(ctypes.get_errno(), "setns")
            finally:
                os.close(fd)
            box["value"] = fn(*args)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class Bench:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.ns = f"fg-bench-{secrets.token_hex(3)}"
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> Bench:
        sh("ip", "netns", "add", self.ns)
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        sh("ip", "netns", "del", self.ns, check=False)

    def spawn(self, argv: list[str], log: str) -> subprocess.Popen:
        with open(self.dir / log, "wb") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], stdout=out,
                                    stderr=subprocess.STDOUT, cwd=self.dir)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            family = tree(proc.pid)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:  # e.g. Kamailio after an overload: no orphans
                for pid in family:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                proc.wait(5)

    # --- servers ----------------------------------------------------------------------------

    def write_config(self, name: str, port: int, ttl: int, state: Path) -> Path:
        accounts = self.dir / "accounts.toml"
        accounts.write_text("".join(f'[[account]]\nuser = "{u}"\npassword = "secret{u}"\n'
                                    for u in USERS))
        path = self.dir / f"{name}.toml"
        path.write_text(f'[registrar]\nlisten = ["127.0.0.1:{port}"]\naccounts = "{accounts}"\n'
                        f"time_to_live = {ttl}\n[state]\npath = \"{state}\"\n")
        return path

    def start_ours(self, name: str, port: int, ttl: int, state: Path,
                   workers: int | None = None) -> subprocess.Popen:
        config = self.write_config(name, port, ttl, state)
        if workers is None:
            argv = [PYTHON, "-m", "floodguard.registrar.commands", "registrar", "-c",
                    str(config)]
        else:  # the config file's settings with this many worker processes
            argv = [PYTHON, "-c",
                    "import dataclasses, sys\n"
                    "from floodguard.registrar import commands, server\n"
                    "settings = commands.load_settings(sys.argv[1])\n"
                    "server.run(dataclasses.replace(settings, workers=int(sys.argv[2])))\n",
                    str(config), str(workers)]
        proc = self.spawn(argv, f"{name}.log")
        self.wait_listening(port, proc)
        return proc

    def start_kamailio(self) -> subprocess.Popen:
        cfg = self.dir / "kamailio.cfg"
        cfg.write_text(KAMAILIO_CFG.read_text().replace("CTL_SOCKET",
                                                        str(self.dir / "kamailio.ctl")))
        proc = self.spawn(["kamailio", "-DD", "-f", str(cfg), "-l",
                           f"udp:127.0.0.1:{KAMAILIO_PORT}", "-P", str(self.dir / "kam.pid"),
                           "-w", str(self.dir)], "kamailio.log")
        self.wait_listening(KAMAILIO_PORT, proc)
        return proc

    def udp_socket(self, port: int = 0) -> socket.socket:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", port))
            return sock

        return in_netns(self.ns, make)

    def wait_listening(self, port: int, proc: subprocess.Popen) -> None:
        sock = self.udp_socket()
        sock.settimeout(0.3)
        try:
            for _ in range(50):
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited: see {self.dir}")
                sock.sendto(build.options(f"sip:127.0.0.1:{port}",
                                          local=f"127.0.0.1:{sock.getsockname()[1]}",
                                          from_uri="sip:b@b", call_id="w"),
                            ("127.0.0.1", port))
                with contextlib.suppress(OSError):
                    if sock.recv(4096).startswith(b"SIP/2.0"):
                        return
            raise RuntimeError(f"server on port {port} not answering")
        finally:
            sock.close()

    # --- throughput ----------------------------------------------------------------------------

    def sipp_run(self, port: int, rate: int, seconds: int, server_pids: list[int],
                 generators: int = 1) -> dict:
        """Offer `rate` calls/s for `seconds`, split over `generators` SIPp processes (one SIPp
        paces no more than about 10,500 calls/s here, whatever the server)."""
        inf = self.dir / "users.csv"
        inf.write_text("SEQUENTIAL\n" + "".join(
            f"{u};[authentication username={u} password=secret{u}]\n" for u in USERS))
        shares = [rate // generators + (1 if i < rate % generators else 0)
                  for i in range(generators)]
        stats = [self.dir / f"stat-{port}-{rate}-{i}.csv" for i in range(generators)]
        before = cpu_seconds(server_pids)
        drops_before = self.udp_drops()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        procs = [subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "sipp", "-sf", str(SCENARIO), "-inf", str(inf),
             f"127.0.0.1:{port}", "-r", str(share), "-m", str(share * seconds),
             "-p", str(16000 + i), "-nostdin", "-recv_timeout", "5000",
             "-timeout", f"{seconds * 4 + 20}s", "-trace_stat", "-stf", str(stat), "-fd", "1",
             "-max_socket", "4096", "-buff_size", str(SIPP_BUFFER)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir)
            for i, (share, stat) in enumerate(zip(shares, stats, strict=True))]
        codes = [proc.wait() for proc in procs]
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(server_pids) - before
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        sipp_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
        drops = self.udp_drops() - drops_before
        rows = [self.last_stat(stat) for stat in stats]
        ok = sum(int(row.get("SuccessfulCall(C)", 0)) for row in rows)
        failed = sum(int(row.get("FailedCall(C)", 0)) for row in rows)
        retrans = sum(int(row.get("Retransmissions(C)", 0)) for row in rows)
        return {"rate": rate, "ok": ok, "failed": failed, "retrans": retrans, "drops": drops,
                "elapsed": elapsed, "achieved": ok / elapsed if elapsed else 0.0,
                "cpu": cpu / elapsed if elapsed else 0.0,
                "sipp_cpu": sipp_cpu / elapsed if elapsed else 0.0,
                "sustained": not any(codes) and failed == 0 and ok == rate * seconds
                and elapsed <= seconds * 1.1 + 1.5}

    def udp_drops(self) -> int:
        """Datagrams dropped by a full receive buffer in the namespace (SIPp's or the server's
        socket: the retransmissions they cause are not the server's slowness)."""
        lines = [line.split() for line in
                 sh("ip", "netns", "exec", self.ns, "cat", "/proc/net/snmp").stdout.splitlines()
                 if line.startswith("Udp:")]
        return int(dict(zip(lines[0], lines[1], strict=True))["RcvbufErrors"])

    @staticmethod
    def last_stat(path: Path) -> dict:
        try:
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        except OSError:
            return {}
        header, last = lines[0].split(";"), lines[-1].split(";")
        return dict(zip(header, last, strict=False))

    def throughput(self, loads: list[int], seconds: int, retries: int = 1,
                   workers: tuple[int, ...] = (2,), generators: int = 1) -> tuple[int, int]:
        """Each load against floodguard with each worker count in `workers`, then Kamailio
        (2 children); returns floodguard's best sustained load (first worker count) and
        Kamailio's."""
        servers: list[tuple[str, int, subprocess.Popen]] = []
        for i, count in enumerate(workers):
            port = OURS_PORT + 2 * i
            servers.append((f"floodguard x{count}", port, self.start_ours(
                f"throughput{count}", port, 3600, self.dir / f"throughput{count}.db", count)))
        servers.append(("kamailio", KAMAILIO_PORT, self.start_kamailio()))
        results: dict[str, list[dict]] = {name: [] for name, _, _ in servers}
        failures = dict.fromkeys(results, 0)
        print(f"\n== authenticated REGISTER throughput ({seconds} s per load, SIPp "
              f"{SCENARIO.relative_to(REPO)}, {len(USERS)} accounts, {generators} SIPp)")
        print(f"{'offered/s':>9}  {'server':<13} {'ok':>7} {'failed':>6} {'retrans':>7} "
              f"{'drops':>6} {'achieved/s':>10} {'server CPU':>10} {'SIPp CPU':>8}  verdict")
        for rate in loads:
            for name, port, proc in servers:
                if failures[name] >= 2:
                    continue
                for attempt in range(retries + 1):
                    r = self.sipp_run(port, rate, seconds, tree(proc.pid), generators)
                    verdict = "sustained" if r["sustained"] else "FAILED"
                    if attempt:
                        verdict += " (retry)"
                    print(f"{rate:>9}  {name:<13} {r['ok']:>7} {r['failed']:>6} "
                          f"{r['retrans']:>7} {r['drops']:>6} {r['achieved']:>10.0f} "
                          f"{r['cpu'] * 100:>9.0f}% "
                          f"{r['sipp_cpu'] * 100:>7.0f}%  "
                          f"{verdict}")
                    time.sleep(1)
                    if r["sustained"]:
                        break
                results[name].append(r)
                failures[name] = 0 if r["sustained"] else failures[name] + 1
        for _, _, proc in servers:
            self.stop(proc)
        best = {name: max((r["rate"] for r in rows if r["sustained"]), default=0)
                for name, rows in results.items()}
        kam = best["kamailio"]
        print("\nsustained with zero failures: " + ", ".join(f"{n} {b}/s" for n, b in best.items()))
        for name, _, _ in servers[:-1]:
            ratio = best[name] / kam if kam else float("nan")
            print(f"ratio {name} / kamailio (2 children): {ratio:.2f}")
        # CPU per registration at the loads each sustained: less sensitive to other load on the
        # machine than the breaking point (Kamailio's figure sums all its processes).
        for name, rows in results.items():
            costs = [r["cpu"] / r["rate"] * 1e6 for r in rows if r["sustained"]]
            if costs:
                print(f"CPU per registration ({name}): median {statistics.median(costs):.0f} us "
                      f"-> about {1e6 / statistics.median(costs):.0f} registrations/s per core")
        return best[servers[0][0]], kam

    # --- liveness --------------------------------------------------------------------------------

    def liveness(self, count: int, ttl: int) -> None:
        state = self.dir / "liveness.db"
        now = time.time()
        table = BindingTable(state, now=now)
        for i in range(count):
            table.put(Binding(
                f"b{i}", f"sip:b{i}@127.0.0.1:{RESPONDER_PORT}", "bench", "udp", "127.0.0.1",
                RESPONDER_PORT, f"udp:127.0.0.1:{LIVENESS_PORT}", f"bench-{i}", 1, now + 7200,
                now, now, True))
        table.close()
        responder = self.udp_socket(RESPONDER_PORT)
        responder.settimeout(0.5)
        first_seen: dict[str, float] = {}
        stop = threading.Event()
        call_id = re.compile(rb"\r\nCall-ID: *([^\r]+)", re.I)
        unplugged = b"OPTIONS sip:b0@"

        def respond() -> None:
            while not stop.is_set():
                try:
                    data, addr = responder.recvfrom(65535)
                except OSError:
                    continue
                found = call_id.search(data)
                if not data.startswith(b"OPTIONS") or found is None:
                    continue
                first_seen.setdefault(found.group(1).decode(), time.monotonic())
                if data.startswith(unplugged):
                    continue
                answer = build.reply(data)
                if answer is not None:
                    responder.sendto(answer, addr)

        thread = threading.Thread(target=respond, daemon=True)
        thread.start()
        start = time.monotonic()
        proc = self.start_ours("liveness", LIVENESS_PORT, ttl, state)
        cpu_before, window_start = cpu_seconds(tree(proc.pid)), time.monotonic()
        offline_after = None
        db = sqlite3.connect(f"file:{state}?mode=ro", uri=True)
        while time.monotonic() - window_start < ttl + 1:
            if offline_after is None:
                row = db.execute("SELECT online FROM reg_bindings WHERE aor = 'b0'").fetchone()
                if row is not None and row[0] == 0:
                    offline_after = time.monotonic() - start
            time.sleep(0.2)
        cpu = cpu_seconds(tree(proc.pid)) - cpu_before
        window = time.monotonic() - window_start
        online = db.execute("SELECT sum(online), count(*) FROM reg_bindings").fetchone()
        db.close()
        self.stop(proc)
        stop.set()
        thread.join(2)
        responder.close()
        per_second = Counter(int(t - window_start) for t in first_seen.values()
                             if 0 <= t - window_start < ttl)
        counts = [per_second.get(s, 0) for s in range(1, ttl)]  # whole seconds of one interval
        print(f"\n== liveness: {count} bindings, time_to_live {ttl} s")
        print(f"OPTIONS probes in the first {ttl} s: {sum(per_second.values())} "
              f"(expected {count})")
        print(f"per-second sends: mean {statistics.mean(counts):.1f}, stdev "
              f"{statistics.pstdev(counts):.1f}, min {min(counts)}, max {max(counts)} "
              f"(even spread = {count / ttl:.1f}/s)")
        print(f"registrar CPU over {window:.0f} s: {cpu:.2f} s = {cpu / window * 100:.1f}% "
              "of one core")
        print(f"bindings online at the end: {online[0]} of {online[1]}")
        if offline_after is None:
            print("unplugged endpoint: NOT marked offline within the interval")
        else:
            print(f"unplugged endpoint marked offline {offline_after:.1f} s after start "
                  f"(bound: time_to_live + 10 = {ttl + 10} s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer loads, shorter runs")
    parser.add_argument("--loads", default="", help="comma-separated offered loads (calls/s)")
    parser.add_argument("--seconds", type=int, default=0, help="seconds per load")
    parser.add_argument("--retries", type=int, default=1,
                        help="repeat a failed load this many times (the host may be shared)")
    parser.add_argument("--workers", default="2",
                        help="comma-separated floodguard worker counts to run side by side "
                             "(Kamailio runs 2 children), e.g. 1,2")
    parser.add_argument("--runs", type=int, default=1,
                        help="repeat the throughput sweep this many times; prints each run's "
                             "ratio and their median (the breaking points are noisy)")
    parser.add_argument("--generators", type=int, default=1,
                        help="SIPp processes sharing each offered load (one SIPp paces at most "
                             "about 10,500 calls/s here: above that both servers only show "
                             "SIPp's ceiling)")
    parser.add_argument("--skip-liveness", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_registrar: needs root (network namespace)", file=sys.stderr)
        return 2
    for tool in ("sipp", "kamailio", "ip"):
        if shutil.which(tool) is None:
            print(f"bench_registrar: {tool} is missing", file=sys.stderr)
            return 2
    loads = [int(x) for x in args.loads.split(",") if x] or (
        [2000, 5000, 8000] if args.quick else [4000, 8000, 12000, 14000, 15000, 16000, 17000])
    seconds = args.seconds or (5 if args.quick else 10)
    with tempfile.TemporaryDirectory(prefix="fg-bench-") as tmp, Bench(Path(tmp)) as bench:
        if not args.skip_throughput:
            bests = [bench.throughput(loads, seconds, args.retries,
                                      tuple(int(x) for x in args.workers.split(",") if x),
                                      max(1, args.generators))
                     for _ in range(max(1, args.runs))]
            if len(bests) > 1:
                ratios = [ours / kam if kam else float("nan") for ours, kam in bests]
                print(f"\n{len(bests)} runs, floodguard / kamailio breaking points: "
                      + ", ".join(f"{o}/{k} = {r:.2f}" for (o, k), r in zip(bests, ratios,
                                                                          strict=True))
                      + f"; median ratio {statistics.median(ratios):.2f}")
        if not args.skip_liveness:
            bench.liveness(10_000, 60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
