"""Orchestration: one scenario in one mode, from a clean registrar host to a result record.

``Lab`` builds the namespaces once (``topology.Topology``) and runs scenarios in them one after
another; each run starts from scratch on the registrar host: fresh state database, fresh rules
(``floodguard apply`` through the CLI, protected runs only), fresh registrar and guard, fresh
counters. A run:

1. writes the lab config and accounts; protected: ``floodguard apply``, then ``floodguard run``;
2. starts the registrar (floodguard's own, or Kamailio) pinned to ``registrar_cpus``;
3. starts the phones, which register once during a warm-up so the guard knows them;
4. starts the scenario's attack generators (pinned to ``attacker_cpus``) for ``duration`` s,
   while the phones keep refreshing and a sampler reads the kernel counters every second;
5. stops everything, removes the rules, and turns the counters into a result record.

Counters: ``attack_sent`` comes from a counting rule on the attackers' OUTPUT (so SIPVicious'
packets count too); ``attack_dropped_kernel`` from floodguard's own DROP rules (by layer);
``attack_reached_registrar`` from a counting rule in the registrar host's ``security`` table,
which runs after every floodguard layer; the guard's drops are what entered and did not come
out: ``sent - dropped in kernel - reached``. Bans come from the guard's JSON events.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from floodguard.lab import sip, stats
from floodguard.lab.sampler import REACH_CHAIN, SENT_CHAIN, reach_rules
from floodguard.lab.topology import Process, Topology, TopologyError

SCENARIOS = ("volume", "botnet", "bruteforce", "scanner", "contact-abuse", "hijack", "storm")
REGISTRARS = ("floodguard", "kamailio")

CLK_TCK = os.sysconf("SC_CLK_TCK")
KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"


class LabError(RuntimeError):
    """A lab run could not be carried out (a component did not start, a tool is missing)."""


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
    from floodguard.lab.topology import REGISTRAR_IP

    return f"{REGISTRAR_IP}:{sip.SIP_PORT}"


def kamailio_config(users: list[str], ctl_socket: Path) -> str:
    """A Kamailio registrar with digest auth for the lab's accounts (and the attacker's own)."""
    first, last = int(users[0]), int(users[-1])
    return f"""#!KAMAILIO
debug=1
max_while_loops={last - first + 100}
log_stderror=yes
fork=yes
children=2
auto_aliases=no
mpath="{KAMAILIO_MODULES}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "htable.so"
loadmodule "ctl.so"
loadmodule "kex.so"
modparam("ctl", "binrpc", "unix:{ctl_socket}")
modparam("htable", "htable", "users=>size=12;")
modparam("auth", "nonce_expire", 300)
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)
event_route[htable:mod-init] {{
    $var(i) = {first};
    while ($var(i) <= {last}) {{
        $sht(users=>$var(i)) = "lab" + $var(i) + "pw";
        $var(i) = $var(i) + 1;
    }}
    $sht(users=>{sip.ATTACKER_USER}) = "{sip.ATTACKER_PASSWORD}";
}}
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (is_method("REGISTER")) {{
        if ($sht(users=>$tU) == $null) {{
            $var(pw) = "x-no-such-user-" + $Ts;
        }} else {{
            $var(pw) = $sht(users=>$tU);
        }}
        if (!pv_auth_check("$td", "$var(pw)", "0", "1")) {{
            auth_challenge("$td", "1");
            exit;
        }}
        if (!save("location")) {{ sl_reply_error(); }}
        exit;
    }}
    if (is_method("OPTIONS")) {{ sl_send_reply("200", "OK"); exit; }}
    sl_send_reply("405", "Method Not Allowed");
}}
"""


@dataclass
class Registrar:
    """The registrar under test, however it is implemented."""

    kind: str
    process: Process
    topology: Topology
    state_db: Path | None = None
    ctl_socket: Path | None = None

    def pids(self) -> list[int]:
        if self.kind == "floodguard":
            return [self.process.pid]
        out = []
        for pid in self.topology.pids_in(self.topology.registrar_ns):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "kamailio":
                    out.append(pid)
        return out

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def contacts(self, user: str) -> set[str] | None:
        """The contacts bound to ``user``'s AOR now (None: cannot tell)."""
        if self.kind == "floodguard":
            from floodguard.registrar.bindings import BindingStoreError, read_endpoints

            assert self.state_db is not None
            try:
                rows = read_endpoints(self.state_db)
            except BindingStoreError:
                return None
            return {r.contact for r in rows if r.aor.split("@", 1)[0] == user}
        assert self.ctl_socket is not None
        result = self.topology.run_in(
            self.topology.registrar_ns,
            ["kamcmd", "-s", f"unix:{self.ctl_socket}", "ul.lookup", "location", f"s:{user}"],
            check=False, timeout=10)
        text = result.stdout + result.stderr
        if "404" in text or "not found" in text.lower():
            return set()
        if result.returncode != 0 or "error:" in text:
            return None
        return {line.split(":", 1)[1].strip() for line in result.stdout.splitlines()
                if line.strip().startswith("Address:")}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (0 when gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


class LineReader:
    """Reads a child's stdout lines on a thread so the orchestrator never blocks on it."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self.lines.put(line)
        except (OSError, ValueError):
            pass
        self.lines.put(None)

    def json_until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float
                   ) -> dict[str, Any]:
        """The first JSON line satisfying ``predicate``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise LabError("the process ended before answering")
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and predicate(record):
                    return record
        raise LabError(f"no answer within {timeout:.0f} s")

    def drain_json(self) -> list[dict[str, Any]]:
        out = []
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return out
            if line is None:
                return out
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)


@dataclass
class Run:
    """The live parts of one scenario run."""

    scenario: str
    protected: bool
    directory: Path
    config: Path
    registrar: Registrar | None = None
    guard: Process | None = None
    phones: Process | None = None
    phone_reader: LineReader | None = None
    sampler: Process | None = None
    sampler_reader: LineReader | None = None
    attacks: list[tuple[str, Process]] = field(default_factory=list)
    guard_rss: list[tuple[float, float]] = field(default_factory=list)
    victim_seen: list[set[str]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)


class Lab:
    """The namespaces plus the ability to run any scenario in either mode in them."""

    def __init__(self, settings: LabSettings,
                 progress: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.progress = progress or (lambda _msg: None)
        self.topology: Topology | None = None
        self.workdir: Path | None = None
        self._own_workdir = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Lab:
        s = self.settings
        self._check_tools()
        if s.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="floodguard-lab-"))
            self._own_workdir = not s.keep_workdir
        else:
            self.workdir = Path(s.workdir)
            self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o755)
        self.topology = Topology(phones=s.phones + s.storm_phones, attackers=s.attackers,
                                 workdir=self.workdir)
        self.progress(f"building namespaces {', '.join(self.topology.namespaces)}")
        self.topology.build()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.topology is not None:
            self.progress("tearing down the lab")
            self.topology.teardown()
            self.topology = None
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _check_tools(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, iptables, raw sockets)")
        needed = ["ip", "iptables", "iptables-save", "taskset", "conntrack"]
        if self.settings.registrar == "kamailio":
            needed += ["kamailio", "kamcmd"]
        missing = [t for t in needed if shutil.which(t) is None]
        if missing:
            raise LabError(f"missing tools: {', '.join(missing)} (run `sudo make deps`)")

    @property
    def attack_duration(self) -> float:
        """The longest an attack runs: the measured window plus one registration timeout (and
        a second). Attacks are stopped as soon as every registration started in the window has
        finished, so each one counted was made, retransmissions and all, under attack."""
        return self.settings.duration + self.settings.register_timeout + 1.0

    @property
    def topo(self) -> Topology:
        if self.topology is None:
            raise LabError("the lab is not built")
        return self.topology

    # ------------------------------------------------------------------ helpers

    def _py(self, module: str, *args: str) -> list[str]:
        return [self.settings.python, "-m", module, *args]

    def _floodguard(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = self._py("floodguard.lab._cli", *args)
        return self.topo.run_in(self.topo.registrar_ns, argv, check=True, timeout=120)

    def _iptables(self, ns: str, *args: str, check: bool = True) -> None:
        self.topo.run_in(ns, ["iptables", "-w", *args], check=check)

    def _install_counters(self) -> None:
        topo = self.topo
        atk, reg = topo.attackers_ns, topo.registrar_ns
        self._remove_counters()
        self._iptables(atk, "-N", SENT_CHAIN)
        self._iptables(atk, "-A", SENT_CHAIN, "-p", "udp", "-m", "udp", "--dport", "5060",
                       "-j", "RETURN")
        self._iptables(atk, "-I", "OUTPUT", "1", "-j", SENT_CHAIN)
        self._iptables(reg, "-t", "security", "-N", REACH_CHAIN)
        for rule in reach_rules():
            self._iptables(reg, "-t", "security", "-A", REACH_CHAIN, *rule)
        self._iptables(reg, "-t", "security", "-I", "INPUT", "1", "-j", REACH_CHAIN)

    def _remove_counters(self) -> None:
        topo = self.topo
        for ns, table, chain in ((topo.attackers_ns, "filter", SENT_CHAIN),
                                 (topo.registrar_ns, "security", REACH_CHAIN)):
            builtin = "OUTPUT" if chain == SENT_CHAIN else "INPUT"
            while topo.run_in(ns, ["iptables", "-w", "-t", table, "-D", builtin, "-j", chain],
                              check=False).returncode == 0:
                pass
            topo.run_in(ns, ["iptables", "-w", "-t", table, "-F", chain], check=False)
            topo.run_in(ns, ["iptables", "-w", "-t", table, "-X", chain], check=False)

    # ------------------------------------------------------------------ components

    def _write_files(self, run_dir: Path) -> Path:
        s = self.settings
        users = [sip.phone_user(i) for i in range(s.phones + s.storm_phones)]
        accounts = run_dir / "accounts.toml"
        accounts.write_text(sip.accounts_toml(users), encoding="utf-8")
        config = run_dir / "floodguard.toml"
        config.write_text(lab_config(s, run_dir, accounts=accounts), encoding="utf-8")
        return config

    def _launch_registrar(self, run: Run) -> Callable[[], bool]:
        """Start the registrar; returns a probe that says when it is ready (raises if it died)."""
        s, topo = self.settings, self.topo
        log = run.directory / "registrar.log"
        if s.registrar == "kamailio":
            users = [sip.phone_user(i) for i in range(s.phones + s.storm_phones)]
            ctl = run.directory / "kamctl.sock"
            cfg = run.directory / "kamailio.cfg"
            cfg.write_text(kamailio_config(users, ctl), encoding="utf-8")
            argv = ["kamailio", "-f", str(cfg), "-DD", "-E", "-w", str(run.directory)]
            for spec in (f"udp:{sip_listen()}", f"tcp:{sip_listen()}"):
                argv += ["-l", spec]
            proc = topo.start("kamailio", topo.registrar_ns, argv, cpus=s.registrar_cpus,
                              log=log)
            run.registrar = Registrar("kamailio", proc, topo, ctl_socket=ctl)
            ready = ctl.exists
        else:
            argv = self._py("floodguard.registrar.commands", "registrar", "-c", str(run.config))
            proc = topo.start("registrar", topo.registrar_ns, argv, cpus=s.registrar_cpus,
                              log=log)
            run.registrar = Registrar("floodguard", proc, topo,
                                      state_db=run.directory / "state.db")

            def ready() -> bool:
                return "listening on" in log.read_text(errors="replace")

        def probe() -> bool:
            if not proc.alive():
                raise LabError(f"{s.registrar} registrar exited at start:\n"
                               f"{log.read_text(errors='replace')[-2000:]}")
            return ready()

        return probe

    def _launch_guard(self, run: Run) -> Callable[[], bool]:
        """Start ``floodguard run``; returns a probe that says when it is ready."""
        topo = self.topo
        log = run.directory / "guard.log"
        proc = topo.start("guard", topo.registrar_ns,
                          self._py("floodguard.lab._cli", "run", "-c", str(run.config)), log=log)
        run.guard = proc

        def probe() -> bool:
            if any(e.get("event") == "guard_started" for e in guard_events(log)):
                return True
            if not proc.alive():
                raise LabError(f"the guard exited at start:\n"
                               f"{log.read_text(errors='replace')[-2000:]}")
            return False

        return probe

    @staticmethod
    def _wait(probes: dict[str, Callable[[], bool]], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        waiting = dict(probes)
        while waiting:
            for name, probe in list(waiting.items()):
                if probe():
                    del waiting[name]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise LabError(f"did not start within {timeout:.0f} s: {', '.join(waiting)}")
            time.sleep(0.05)

    def _start_phones(self, run: Run, storm: bool) -> None:
        s, topo = self.settings, self.topo
        argv = self._py("floodguard.lab.phones", "--server", topo.registrar_ip,
                        "--phones", str(s.phones), "--storm", str(s.storm_phones if storm else 0),
                        "--refresh", str(s.refresh), "--timeout", str(s.register_timeout),
                        "--warmup", str(self._warmup(storm)))
        proc = topo.start("phones", topo.phones_ns, argv, log=run.directory / "phones.log",
                          pipe_stdin=True, pipe_stdout=True, cpus=s.phone_cpus)
        assert proc.popen.stdout is not None
        run.phones, run.phone_reader = proc, LineReader(proc.popen.stdout)
        run.phone_reader.json_until(lambda r: r.get("event") == "ready", 30)
        warm = run.phone_reader.json_until(lambda r: r.get("event") == "warm", 60)
        if warm.get("failed"):
            # Nothing attacks during the warm-up: a phone that cannot register then points at
            # the lab's own setup (accounts, registrar config), not at the defence.
            raise LabError(f"{warm['failed']} of {warm['failed'] + warm.get('ok', 0)} phones "
                           f"could not register during the warm-up (see "
                           f"{run.directory / 'registrar.log'})")

    def _start_sampler(self, run: Run) -> None:
        topo = self.topo
        interval = 0.5 if self.settings.duration <= 10 else 1.0
        args = ["--interval", str(interval), "--sent-netns", topo.attackers_ns]
        if run.protected:
            args = ["-c", str(run.config), *args]
        proc = topo.start("sampler", topo.registrar_ns, self._py("floodguard.lab.sampler", *args),
                          log=run.directory / "sampler.log", pipe_stdin=True, pipe_stdout=True)
        assert proc.popen.stdout is not None
        run.sampler, run.sampler_reader = proc, LineReader(proc.popen.stdout)

    def _warmup(self, storm: bool) -> float:
        """Seconds over which the phones first register: unknown sources share the kernel's
        queue budget, so at most about half of it is used (two packets per registration)."""
        s = self.settings
        phones = s.phones + (s.storm_phones if storm else 0)
        return max(s.warmup, phones / max(1.0, s.queue_budget / 4))

    def attack_commands(self, scenario: str, run_dir: Path) -> list[tuple[str, list[str]]]:
        """The attack processes of a scenario: (name, argv) to run in the attackers' namespace."""
        s, topo = self.settings, self.topo
        server = topo.registrar_ip
        attackers = topo.attacker_ips()
        base = ["--server", server, "--duration", str(self.attack_duration)]
        users = str(s.phones + s.storm_phones)

        def gen(name: str, *args: str) -> list[str]:
            return self._py("floodguard.lab.attacks", name, *base, "--users", users, *args)

        def srcs(first: int, count: int) -> list[str]:
            out: list[str] = []
            for ip in attackers[first:first + count]:
                out += ["--source", ip]
            return out

        timeout = ["timeout", "-s", "INT", str(max(1, int(self.attack_duration)))]
        vicious = s.sipvicious and shutil.which("svcrack") is not None
        common = ["-p", "5060", "-x", topo.default_attacker_ip]
        commands: list[tuple[str, list[str]]] = []
        if scenario == "volume":
            commands.append(("volume", gen("volume", *srcs(0, 1), "--rate", str(s.volume_rate))))
        elif scenario == "botnet":
            commands.append(("botnet", gen("botnet", "--botnet-sources", str(s.botnet_sources),
                                           "--rate", str(s.botnet_rate))))
        elif scenario == "bruteforce":
            commands.append(("guesser", gen("bruteforce", *srcs(0, 1), "--rate", "5",
                                            "--target", sip.phone_user(0))))
            if vicious:
                words = run_dir / "svcrack-words.txt"
                from floodguard.lab.attacks import guesses

                words.write_text("\n".join(guesses(sip.phone_user(0), 60)) + "\n")
                commands.append(("svcrack", [*timeout, "svcrack", "-u", sip.phone_user(0),
                                             "-d", str(words), *common, "-t", "0.1", server]))
        elif scenario == "scanner":
            commands.append(("scanner", gen("scanner", *srcs(1, 4), "--rate", "200")))
            if vicious:
                commands.append(("svmap", [*timeout, "svmap", *common, server]))
                commands.append(("svwar", [*timeout, "svwar", *common, "-m", "REGISTER", "--force",
                                           "-e", f"{sip.FIRST_USER}-{sip.FIRST_USER + 200}",
                                           "-t", "0.05", server]))
        elif scenario == "contact-abuse":
            commands.append(("contact-abuse", gen("contact-abuse", *srcs(5, 8), "--rate", "400")))
        elif scenario == "hijack":
            commands.append(("hijack", gen("hijack", *srcs(2, 1), "--rate", "4",
                                           "--target", sip.phone_user(1))))
        elif scenario != "storm":
            raise ValueError(f"unknown scenario {scenario!r}")
        return commands

    # ------------------------------------------------------------------ one run

    def run(self, scenario: str, protected: bool) -> dict[str, Any]:
        """Run one scenario in one mode; returns its result record (see ``stats.summarise``)."""
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}")
        assert self.workdir is not None
        mode = "protected" if protected else "unprotected"
        run_dir = self.workdir / f"{scenario}-{mode}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        os.chmod(run_dir, 0o755)
        run = Run(scenario, protected, run_dir, self._write_files(run_dir))
        self.progress(f"{scenario} ({mode}, {self.settings.registrar} registrar): starting")
        try:
            return self._run(run)
        finally:
            self._stop_run(run)

    def _run(self, run: Run) -> dict[str, Any]:
        s, topo = self.settings, self.topo
        topo.run_in(topo.registrar_ns, ["conntrack", "-F"], check=False)
        self._install_counters()
        if run.protected:
            self._floodguard("apply", "-c", str(run.config))
        probes = {"registrar": self._launch_registrar(run)}
        if run.protected:
            probes["guard"] = self._launch_guard(run)
        self._wait(probes)
        assert run.registrar is not None
        self._start_sampler(run)
        storm = run.scenario == "storm"
        self._start_phones(run, storm)
        victim = sip.phone_user(1)
        victim_before = run.registrar.contacts(victim) if run.scenario == "hijack" else None
        assert run.sampler_reader is not None
        baseline = run.sampler_reader.json_until(lambda r: "reach" in r, 30)
        for record in run.sampler_reader.drain_json():
            if "reach" in record:
                baseline = record
        run.samples.append(baseline)  # the counters just before the attack
        cpu0 = run.registrar.cpu_seconds()
        guard_cpu0 = self._guard_cpu(run)
        t0 = time.time()
        for name, argv in self.attack_commands(run.scenario, run.directory):
            env = {"HOME": str(run.directory)}  # SIPVicious keeps its session files there
            proc = topo.start(name, topo.attackers_ns, argv, cpus=s.attacker_cpus,
                              log=run.directory / f"attack-{name}.log", pipe_stdout=True,
                              env=env)
            run.attacks.append((name, proc))
        phone_result = self._attack_window(run, t0, storm, victim, victim_before)
        t_end = time.time()
        cpu = run.registrar.cpu_seconds() - cpu0
        guard_cpu = self._guard_cpu(run) - guard_cpu0
        samples = self._stop_sampler(run)
        if victim_before is not None:
            seen = run.registrar.contacts(victim)
            if seen is not None:
                run.victim_seen.append(seen)
        attack_results = {}
        for name, proc in run.attacks:
            attack_results[name] = read_attack_result(proc, run.directory / f"attack-{name}.log")
        verdicts: dict[str, int] | None = None
        if run.guard is not None:
            run.guard.stop(timeout=15)  # drains its queue and publishes its last counters
            verdicts = guard_verdicts(run.directory / "state.db")
        events = guard_events(run.directory / "guard.log") if run.protected else []
        measured = stats.Measured(
            scenario=run.scenario, protected=run.protected, registrar=s.registrar,
            t0=t0, t_end=t_end, attempts=phone_result.get("attempts", []),
            options_answered=int(phone_result.get("options_answered", 0)),
            samples=samples, events=events, guard_verdicts=verdicts,
            registrar_cpu_s=cpu, guard_cpu_s=guard_cpu, guard_rss=run.guard_rss,
            attacks=attack_results,
            victim_before=sorted(victim_before) if victim_before is not None else None,
            victim_seen=[sorted(v) for v in run.victim_seen],
        )
        result = stats.summarise(measured)
        result["settings"] = {k: v for k, v in asdict(s).items()
                              if k not in ("workdir", "python", "keep_workdir")}
        self.progress(f"{run.scenario} ({'protected' if run.protected else 'unprotected'}): "
                      f"legit {result['legit_succeeded']}/{result['legit_attempted']}, "
                      f"attack sent {result['attack_sent']}, "
                      f"reached {result['attack_reached_registrar']}")
        return result

    def _attack_window(self, run: Run, t0: float, storm: bool, victim: str,
                       victim_before: set[str] | None) -> dict[str, Any]:
        """Let the attack run for the measured window, then until every registration started
        in the window has finished; sample once a second. Returns the phones' result."""
        s = self.settings
        assert run.registrar is not None and run.phone_reader is not None
        window_end = t0 + s.duration
        deadline = t0 + self.attack_duration + 20
        stormed = stopped = False
        phone_result: dict[str, Any] | None = None
        while True:
            now = time.time()
            if storm and not stormed and now >= t0 + min(1.0, s.duration / 4):
                self._tell_phones(run, "storm")
                stormed = True
            if not stopped and now >= window_end:
                # Registrations started from now on would not be measured; the ones in flight
                # finish while the attack still runs.
                self._tell_phones(run, "stop")
                stopped = True
            if stopped and phone_result is None:
                for record in run.phone_reader.drain_json():
                    if record.get("event") == "result":
                        phone_result = record
                if phone_result is not None:
                    for _, proc in run.attacks:
                        if proc.alive():
                            with contextlib.suppress(ProcessLookupError):
                                proc.popen.send_signal(signal.SIGINT)
            running = [p for _, p in run.attacks if p.alive()]
            if phone_result is not None and not running:
                return phone_result
            if now >= deadline:
                for proc in running:
                    proc.stop(timeout=3, sig=signal.SIGKILL)
                if phone_result is None:
                    raise LabError("the phones did not report in time")
                return phone_result
            if run.guard is not None:
                run.guard_rss.append((now, self._guard_rss(run)))
            if victim_before is not None:
                seen = run.registrar.contacts(victim)
                if seen is not None:
                    run.victim_seen.append(seen)
            pause = 0.1 if stopped else min(1.0, max(0.05, window_end - time.time()))
            time.sleep(max(0.05, pause - (time.time() - now)))

    def _guard_pids(self, run: Run) -> list[int]:
        if run.guard is None:
            return []
        return [run.guard.pid, *children(run.guard.pid)]

    def _guard_cpu(self, run: Run) -> float:
        return sum(cpu_seconds(pid) for pid in self._guard_pids(run))

    def _guard_rss(self, run: Run) -> float:
        return sum(rss_mb(pid) for pid in self._guard_pids(run))

    def _stop_sampler(self, run: Run) -> list[dict[str, Any]]:
        if run.sampler is None or run.sampler_reader is None:
            return run.samples
        stdin = run.sampler.popen.stdin
        with contextlib.suppress(OSError):
            if stdin is not None:
                stdin.close()  # the sampler takes a last sample and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            run.sampler.popen.wait(10)
        run.sampler_reader.thread.join(5)
        run.sampler.stop(timeout=5)
        run.samples += [r for r in run.sampler_reader.drain_json() if "reach" in r]
        return run.samples

    def _tell_phones(self, run: Run, command: str) -> None:
        assert run.phones is not None and run.phones.popen.stdin is not None
        try:
            run.phones.popen.stdin.write(command + "\n")
            run.phones.popen.stdin.flush()
        except OSError as exc:
            raise LabError(f"the phones process is gone: {exc}") from None

    def _stop_run(self, run: Run) -> None:
        """Stop the run's processes and remove its rules and counters; never raises."""
        for _, proc in run.attacks:
            with contextlib.suppress(Exception):
                proc.stop(timeout=5, sig=signal.SIGINT)
        for proc in (run.phones, run.sampler, run.guard):
            if proc is not None:
                with contextlib.suppress(Exception):
                    proc.stop(timeout=15)
        if run.registrar is not None:
            with contextlib.suppress(Exception):
                run.registrar.process.stop(timeout=10)
            for pid in run.registrar.pids():  # Kamailio's children, by pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        topo = self.topology
        if topo is None:
            return
        if run.protected:
            with contextlib.suppress(TopologyError, subprocess.SubprocessError):
                self._floodguard("remove", "-c", str(run.config))
        with contextlib.suppress(TopologyError):
            self._remove_counters()
        topo.processes = [p for p in topo.processes if p.alive()]


def guard_events(log: Path) -> list[dict[str, Any]]:
    """The guard's JSON events from its log."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and "event" in record:
                out.append(record)
    return out


def guard_verdicts(state_db: Path) -> dict[str, int] | None:
    """The guard's verdict counters as its workers published them to the state store
    (snapshots ``counters-<engine>``), summed over workers; None when there are none."""
    from floodguard.store import Store, StoreError

    if not state_db.exists():
        return None
    try:
        store = Store(state_db)
    except (StoreError, OSError):
        return None
    try:
        names = [row[0] for row in store.db.execute(
            "SELECT name FROM snapshots WHERE name LIKE 'counters-%'").fetchall()]
        out: dict[str, int] = {}
        for name in names:
            snap = store.load_snapshot(name)
            if snap is None or not isinstance(snap[1], dict):
                continue
            for key, value in (snap[1].get("verdicts") or {}).items():
                out[str(key)] = out.get(str(key), 0) + int(value)
        return out if names else None
    except Exception:  # noqa: BLE001 — a schema the lab does not know: fall back to deriving
        return None
    finally:
        store.close()


def read_attack_result(proc: Process, log: Path) -> dict[str, Any]:
    """The attack generator's JSON summary, or the tail of a SIPVicious tool's output.

    Stops the process first (it has normally finished by itself) and reads its whole stdout.
    """
    out = ""
    try:
        if proc.popen.poll() is None:
            proc.popen.send_signal(signal.SIGINT)
        out, _ = proc.popen.communicate(timeout=10)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        proc.stop(timeout=2, sig=signal.SIGKILL)
    out = out or ""
    for line in reversed(out.splitlines()):
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                return record
    text = out + (log.read_text(errors="replace") if log.exists() else "")
    return {"output": text[-4000:], "exit": proc.popen.returncode}
