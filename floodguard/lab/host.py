"""The registrar host's processes in one run: the registrar under test (floodguard's own or
Kamailio, pinned to ``registrar_cpus``) and, in protected runs, floodguard's guard in front of
it. Each is started with a probe that tells when it is ready (and raises when it died); what the
guard published is read back from its log and its state database.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from floodguard.lab.kamailio import kamailio_argv, kamailio_config, kamailio_contacts, kamailio_pids
from floodguard.lab.procs import LabError, children, cpu_seconds, log_events, rss_mb
from floodguard.lab.settings import LabSettings, lab_users, sip_listen
from floodguard.lab.topology import Process, Topology

# A readiness probe: True once ready, False while starting; raises LabError when it died.
Probe = Callable[[], bool]


@dataclass
class Registrar:
    """The registrar under test, however it is implemented."""

    kind: str
    process: Process
    topology: Topology
    state_db: Path | None = None
    ctl_socket: Path | None = None

    def pids(self) -> list[int]:
        """The registrar's processes."""
        if self.kind == "floodguard":
            return [self.process.pid]
        return kamailio_pids(self.topology)

    def cpu_seconds(self) -> float:
        """CPU time of all of the registrar's processes so far."""
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
        return kamailio_contacts(self.topology, self.ctl_socket, user)


def start_registrar(topo: Topology, settings: LabSettings, run_dir: Path, config: Path
                    ) -> tuple[Registrar, Probe]:
    """Start the registrar under test; returns it and its readiness probe."""
    log = run_dir / "registrar.log"
    if settings.registrar == "kamailio":
        ctl = run_dir / "kamctl.sock"
        cfg = run_dir / "kamailio.cfg"
        cfg.write_text(kamailio_config(lab_users(settings), ctl), encoding="utf-8")
        proc = topo.start("kamailio", topo.registrar_ns, kamailio_argv(cfg, run_dir, sip_listen()),
                          cpus=settings.registrar_cpus, log=log)
        registrar = Registrar("kamailio", proc, topo, ctl_socket=ctl)
        ready = ctl.exists
    else:
        argv = settings.module_argv("floodguard.registrar.commands", "registrar",
                                    "-c", str(config))
        proc = topo.start("registrar", topo.registrar_ns, argv, cpus=settings.registrar_cpus,
                          log=log)
        registrar = Registrar("floodguard", proc, topo, state_db=run_dir / "state.db")

        def ready() -> bool:
            return "listening on" in log.read_text(errors="replace")

    def probe() -> bool:
        if not proc.alive():
            raise LabError(f"{settings.registrar} registrar exited at start:\n"
                           f"{log.read_text(errors='replace')[-2000:]}")
        return ready()

    return registrar, probe


def start_guard(topo: Topology, settings: LabSettings, run_dir: Path, config: Path
                ) -> tuple[Process, Probe]:
    """Start ``floodguard run``; returns it and its readiness probe."""
    log = run_dir / "guard.log"
    proc = topo.start("guard", topo.registrar_ns,
                      settings.module_argv("floodguard.lab._cli", "run", "-c", str(config)),
                      log=log)

    def probe() -> bool:
        if any(e.get("event") == "guard_started" for e in log_events(log)):
            return True
        if not proc.alive():
            raise LabError(f"the guard exited at start:\n"
                           f"{log.read_text(errors='replace')[-2000:]}")
        return False

    return proc, probe


def wait_ready(probes: dict[str, Probe], timeout: float = 20.0) -> None:
    """Wait until every probe says ready; LabError naming those that are not after ``timeout``."""
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


def guard_usage(guard: Process | None) -> tuple[float, float]:
    """CPU seconds so far and resident MB now of the guard and its workers ((0, 0): none)."""
    if guard is None:
        return 0.0, 0.0
    pids = [guard.pid, *children(guard.pid)]
    return sum(cpu_seconds(pid) for pid in pids), sum(rss_mb(pid) for pid in pids)


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
        snapshots = store.counter_snapshots()
        out: dict[str, int] = {}
        for _saved, data in snapshots.values():
            for key, value in (data.get("verdicts") or {}).items():
                out[str(key)] = out.get(str(key), 0) + int(value)
        return out if snapshots else None
    except Exception:  # noqa: BLE001 — a schema the lab does not know: fall back to deriving
        return None
    finally:
        store.close()
