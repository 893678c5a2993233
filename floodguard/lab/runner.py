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
5. stops everything, removes the rules, and turns the counters into a result record (also
   written to the run's directory as ``result.json``).

Counters: ``attack_sent`` comes from a counting rule on the attackers' OUTPUT (so SIPVicious'
packets count too); ``attack_dropped_kernel`` from floodguard's own DROP rules (by layer);
``attack_reached_registrar`` from a counting rule in the registrar host's ``security`` table,
which runs after every floodguard layer; the guard's drops are what entered and did not come
out: ``sent - dropped in kernel - reached``. Bans come from the guard's JSON events.

What a scenario starts comes from the registry (``scenarios.py``); the registrar and the guard
are started by ``host.py`` (Kamailio's config and commands in ``kamailio.py``), the counting
chains by ``sampler.py``, the settings and config files by ``settings.py``; /proc readings and
children's JSON lines are ``procs.py``'s.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from floodguard.config import AdmissionConfig
from floodguard.lab import baselines, scenarios, sip, stats
from floodguard.lab.host import (
    Registrar,
    guard_usage,
    guard_verdicts,
    start_guard,
    start_registrar,
    wait_ready,
)
from floodguard.lab.procs import LabError, LineReader, log_events, read_attack_result
from floodguard.lab.sampler import install_counters, remove_counters
from floodguard.lab.settings import LabSettings, office_first, total_phones, write_run_files
from floodguard.lab.topology import Process, Topology, TopologyError

__all__ = ["Lab", "LabError", "LabSettings", "Run"]


@dataclass
class Run:
    """The live parts of one scenario run."""

    scenario: str
    protected: bool
    directory: Path
    config: Path
    defence: str = "floodguard"
    registrar: Registrar | None = None
    guard: Process | None = None
    phones: Process | None = None
    phone_reader: LineReader | None = None
    office: Process | None = None  # the office's phones, behind its NAT (nat-office)
    office_reader: LineReader | None = None
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
        self.topology = Topology(phones=total_phones(s), attackers=s.attackers,
                                 office_phones=s.office_phones, workdir=self.workdir)
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

    def scenario_duration(self, scenario: str) -> float:
        """The longest a scenario's attack runs: a fresh start's lasts until its phones are
        all registered or have given up (``fresh_limit`` after they start), then as above."""
        if not scenarios.get(scenario).fresh:
            return self.attack_duration
        s = self.settings
        return max(self.attack_duration, self._fresh_at() + s.fresh_limit
                   + s.register_timeout + 1.0)

    def _fresh_at(self) -> float:
        """Seconds into the attack at which the storm or the fresh start begins."""
        return min(1.0, self.settings.duration / 4)

    @property
    def topo(self) -> Topology:
        if self.topology is None:
            raise LabError("the lab is not built")
        return self.topology

    def _floodguard(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``floodguard ARGS`` (apply, remove) in the registrar's namespace."""
        argv = self.settings.module_argv("floodguard.lab._cli", *args)
        return self.topo.run_in(self.topo.registrar_ns, argv, check=True, timeout=120)

    # ------------------------------------------------------------------ components

    def _start_phones(self, run: Run, storm: bool, fresh: bool, office: bool) -> None:
        s, topo = self.settings, self.topo
        argv = s.module_argv("floodguard.lab.phones", "--server", topo.registrar_ip,
                             "--phones", str(s.phones),
                             "--storm", str(s.storm_phones if storm else 0),
                             "--fresh", str(s.fresh_phones if fresh else 0),
                             "--fresh-first", str(s.phones + s.storm_phones),
                             "--fresh-limit", str(s.fresh_limit),
                             "--refresh", str(s.refresh), "--timeout", str(s.register_timeout),
                             "--warmup", str(self._warmup(storm)))
        run.phones, run.phone_reader = self._start_fleet(run, "phones", topo.phones_ns, argv)
        if office and s.office_phones:
            argv = s.module_argv("floodguard.lab.phones", "--server", topo.registrar_ip,
                                 "--office", "--first", str(office_first(s)),
                                 "--phones", str(s.office_phones), "--refresh", str(s.refresh),
                                 "--timeout", str(s.register_timeout),
                                 "--warmup", str(s.warmup))
            run.office, run.office_reader = self._start_fleet(run, "office-phones",
                                                              topo.office_ns, argv)

    def _start_fleet(self, run: Run, name: str, ns: str, argv: list[str]
                     ) -> tuple[Process, LineReader]:
        """Start a phones process and wait until its phones are registered."""
        proc = self.topo.start(name, ns, argv, log=run.directory / f"{name}.log",
                               pipe_stdin=True, pipe_stdout=True, cpus=self.settings.phone_cpus)
        assert proc.popen.stdout is not None
        reader = LineReader(proc.popen.stdout)
        reader.json_until(lambda r: r.get("event") == "ready", 30)
        warm = reader.json_until(lambda r: r.get("event") == "warm", 60)
        if warm.get("failed"):
            # Nothing attacks during the warm-up: a phone that cannot register then points at
            # the lab's own setup (accounts, registrar config), not at the defence.
            raise LabError(f"{warm['failed']} of {warm['failed'] + warm.get('ok', 0)} {name} "
                           f"could not register during the warm-up (see "
                           f"{run.directory / 'registrar.log'})")
        return proc, reader

    def _start_sampler(self, run: Run) -> None:
        topo = self.topo
        interval = 0.5 if self.settings.duration <= 10 else 1.0
        args = ["--interval", str(interval), "--sent-netns", topo.attackers_ns,
                "--sent-netns", topo.office_ns]
        if run.protected:
            args = ["-c", str(run.config), *args]
        argv = self.settings.module_argv("floodguard.lab.sampler", *args)
        proc = topo.start("sampler", topo.registrar_ns, argv,
                          log=run.directory / "sampler.log", pipe_stdin=True, pipe_stdout=True)
        assert proc.popen.stdout is not None
        run.sampler, run.sampler_reader = proc, LineReader(proc.popen.stdout)

    def _warmup(self, storm: bool) -> float:
        """Seconds over which the phones first register: unknown sources share the kernel's
        budget, which starts at ``admission.start`` (default 1000/s), so at most about half
        of it is used (two packets per registration)."""
        s = self.settings
        phones = s.phones + (s.storm_phones if storm else 0)
        return max(s.warmup, phones / max(1.0, AdmissionConfig().start / 4))

    def attack_commands(self, scenario: str, run_dir: Path) -> list[tuple[str, list[str]]]:
        """The attack processes of a scenario: (name, argv) to run in the attackers' namespace."""
        s, topo = self.settings, self.topo
        launch = scenarios.Launch(
            python=s.python, server=topo.registrar_ip, attackers=topo.attacker_ips(),
            office_hosts=topo.office_host_ips(),
            tool_source=topo.default_attacker_ip, duration=self.scenario_duration(scenario),
            users=s.phones + s.storm_phones, botnet_sources=s.botnet_sources, settings=s,
            run_dir=run_dir, sipvicious=s.sipvicious and shutil.which("svcrack") is not None)
        return scenarios.get(scenario).commands(launch)

    # ------------------------------------------------------------------ one run

    def run(self, scenario: str, protected: bool = True,
            defence: str | None = None) -> dict[str, Any]:
        """Run one scenario in one mode; returns its result record (see ``stats.summarise``).

        ``defence`` (``baselines.DEFENCES``) overrides ``protected``: ``floodguard`` is the
        protected mode, ``none`` the unprotected one, ``guides`` and ``drop-spoofed`` are
        baselines without floodguard (their results have ``protected`` false)."""
        scenarios.get(scenario)  # ValueError for an unknown one
        if defence is None:
            defence = "floodguard" if protected else "none"
        baselines.rules(defence)  # ValueError for an unknown one
        protected = defence == "floodguard"
        assert self.workdir is not None
        mode = "protected" if protected else "unprotected"
        label = mode if defence in ("floodguard", "none") else defence
        run_dir = self.workdir / f"{scenario}-{label}"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        os.chmod(run_dir, 0o755)
        run = Run(scenario, protected, run_dir, write_run_files(self.settings, run_dir),
                  defence=defence)
        self.progress(f"{scenario} ({label}, {self.settings.registrar} registrar): starting")
        try:
            return self._run(run)
        finally:
            self._stop_run(run)

    def _run(self, run: Run) -> dict[str, Any]:
        s, topo = self.settings, self.topo
        topo.run_in(topo.registrar_ns, ["conntrack", "-F"], check=False)
        install_counters(topo)
        if run.protected:
            self._floodguard("apply", "-c", str(run.config))
        baselines.install(topo, run.defence)
        run.registrar, probe = start_registrar(topo, s, run.directory, run.config)
        probes = {"registrar": probe}
        if run.protected:
            run.guard, probes["guard"] = start_guard(topo, s, run.directory, run.config)
        wait_ready(probes)
        assert run.registrar is not None
        self._start_sampler(run)
        scenario = scenarios.get(run.scenario)
        storm = scenario.storm
        self._start_phones(run, storm, scenario.fresh, scenario.office)
        # the hijack's victim: its binding before the attack, then as the attack goes on
        victim = sip.phone_user(scenario.victim or 0)
        victim_before = run.registrar.contacts(victim) if scenario.victim is not None else None
        assert run.sampler_reader is not None
        baseline = run.sampler_reader.json_until(lambda r: "reach" in r, 30)
        for record in run.sampler_reader.drain_json():
            if "reach" in record:
                baseline = record
        run.samples.append(baseline)  # the counters just before the attack
        cpu0 = run.registrar.cpu_seconds()
        guard_cpu0 = guard_usage(run.guard)[0]
        t0 = time.time()
        where = {g.process: g.where for g in scenario.generators}
        for name, argv in self.attack_commands(run.scenario, run.directory):
            env = {"HOME": str(run.directory)}  # SIPVicious keeps its session files there
            ns = topo.office_ns if where.get(name) == "office" else topo.attackers_ns
            proc = topo.start(name, ns, argv, cpus=s.attacker_cpus,
                              log=run.directory / f"attack-{name}.log", pipe_stdout=True,
                              env=env)
            run.attacks.append((name, proc))
        phone_result = self._attack_window(run, t0, scenario, victim, victim_before)
        t_end = time.time()
        cpu = run.registrar.cpu_seconds() - cpu0
        guard_cpu = guard_usage(run.guard)[0] - guard_cpu0
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
        events = log_events(run.directory / "guard.log") if run.protected else []
        measured = stats.Measured(
            scenario=run.scenario, protected=run.protected, registrar=s.registrar,
            t0=t0, t_end=t_end, attempts=phone_result.get("attempts", []),
            options_answered=int(phone_result.get("options_answered", 0)),
            samples=samples, events=events, guard_verdicts=verdicts,
            registrar_cpu_s=cpu, guard_cpu_s=guard_cpu, guard_rss=run.guard_rss,
            attacks=attack_results,
            victim_before=sorted(victim_before) if victim_before is not None else None,
            victim_seen=[sorted(v) for v in run.victim_seen],
            fresh=phone_result.get("fresh"),
            office_attempts=phone_result.get("office_attempts", []), owner=scenario.owner,
        )
        result = stats.summarise(measured)
        result["defence"] = run.defence
        result["settings"] = {k: v for k, v in asdict(s).items()
                              if k not in ("workdir", "python", "keep_workdir")}
        (run.directory / "result.json").write_text(json.dumps(result, default=str),
                                                   encoding="utf-8")
        fresh = result.get("fresh_start") or {}
        self.progress(f"{run.scenario} ({run.defence}): "
                      + (f"fresh {fresh.get('registered')}/{fresh.get('phones')} in "
                         f"{fresh.get('completed_s')} s, " if fresh else "")
                      + f"legit {result['legit_succeeded']}/{result['legit_attempted']}, "
                      f"attack sent {result['attack_sent']}, "
                      f"reached {result['attack_reached_registrar']}")
        return result

    def _attack_window(self, run: Run, t0: float, scenario: scenarios.Scenario, victim: str,
                       victim_before: set[str] | None) -> dict[str, Any]:
        """Let the attack run for the measured window (a fresh start: until its phones are
        all registered or have given up), then until every registration started in the window
        has finished; sample once a second. Returns the phones' result (a fresh start's
        record under ``fresh``)."""
        s = self.settings
        assert run.registrar is not None and run.phone_reader is not None
        window_end = t0 + s.duration
        deadline = t0 + self.scenario_duration(scenario.name) + 20
        stormed = stopped = False
        fresh: dict[str, Any] | None = None
        phone_result: dict[str, Any] | None = None
        while True:
            now = time.time()
            if (scenario.storm or scenario.fresh) and not stormed and now >= t0 + self._fresh_at():
                self._tell_phones(run, "fresh" if scenario.fresh else "storm")
                stormed = True
            if scenario.fresh and fresh is None and not stopped:
                for record in run.phone_reader.drain_json():
                    if record.get("event") == "fresh":
                        fresh = record
            if not stopped and now >= window_end and (fresh is not None or not scenario.fresh):
                # Registrations started from now on would not be measured; the ones in flight
                # finish while the attack still runs.
                self._tell_phones(run, "stop")
                stopped = True
            if stopped and phone_result is None:
                for record in run.phone_reader.drain_json():
                    if record.get("event") == "result":
                        phone_result = record
                if phone_result is not None:
                    phone_result["fresh"] = fresh
                    phone_result["office_attempts"] = self._office_attempts(run)
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
                run.guard_rss.append((now, guard_usage(run.guard)[1]))
            if victim_before is not None:
                seen = run.registrar.contacts(victim)
                if seen is not None:
                    run.victim_seen.append(seen)
            pause = 0.1 if stopped else min(1.0, max(0.05, window_end - time.time()))
            time.sleep(max(0.05, pause - (time.time() - now)))

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
        """Send a command to the phones (``stop`` also to the office's)."""
        fleets = [run.phones] + ([run.office] if command == "stop" and run.office else [])
        for fleet in fleets:
            assert fleet is not None and fleet.popen.stdin is not None
            try:
                fleet.popen.stdin.write(command + "\n")
                fleet.popen.stdin.flush()
            except OSError as exc:
                raise LabError(f"the {fleet.name} process is gone: {exc}") from None

    def _office_attempts(self, run: Run) -> list[Any]:
        """The office phones' registrations, once they have stopped (none without an office)."""
        if run.office_reader is None:
            return []
        result = run.office_reader.json_until(lambda r: r.get("event") == "result",
                                              self.settings.register_timeout + 10)
        return list(result.get("attempts", []))

    def _stop_run(self, run: Run) -> None:
        """Stop the run's processes and remove its rules and counters; never raises."""
        for _, proc in run.attacks:
            with contextlib.suppress(Exception):
                proc.stop(timeout=5, sig=signal.SIGINT)
        for proc in (run.phones, run.office, run.sampler, run.guard):
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
        with contextlib.suppress(TopologyError, subprocess.SubprocessError):
            baselines.remove(topo, run.defence)
        with contextlib.suppress(TopologyError):
            remove_counters(topo)
        topo.processes = [p for p in topo.processes if p.alive()]
