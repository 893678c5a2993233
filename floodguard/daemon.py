"""``floodguard run``: one guard worker process per NFQUEUE, supervised and restarted on death.

Signals: SIGTERM/SIGINT drain the queues, save state and exit 0; SIGHUP reloads the config file
(an invalid file is reported and the running config is kept).

``run --monitor`` is ``[guard] mode = "monitor"`` for the guard and everything it drives (its
workers, feeds, the fleet link, admission control): they log ``would_*`` events and ban nothing.
The kernel rules are not the guard's to change: they follow the config file (``floodguard
apply``, and the rule keeper, which re-applies what was applied). When the file says
``enforce``, the guard says so at start and after each reload (``monitor_override``): the
kernel's limit rules still drop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Sequence
from types import FrameType

from floodguard import config as configmod
from floodguard.admission_control import AdmissionKeeper
from floodguard.config import Config
from floodguard.events import EventLog
from floodguard.feeds import FeedScheduler
from floodguard.fleet import LOAD_TIMEOUT, FleetLink
from floodguard.guard import Guard
from floodguard.lifetime import stop_with
from floodguard.rulekeeper import CHECK_EVERY, RuleKeeper
from floodguard.store import Store

POLL_SECONDS = 0.2
TICK_SECONDS = 0.5
RESTART_BACKOFF_MAX = 10.0
WORKER_DEAD_LIMIT = 30.0
RULES_CHECK_EVERY = CHECK_EVERY  # how often the rule keeper checks the kernel rules


def sd_notify(message: str) -> bool:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec, or None when no watchdog is armed for us."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return max(0.5, int(usec) / 2e6)
    except ValueError:
        return None


class _Flags:
    def __init__(self) -> None:
        self.stop = False
        self.reload = False

    def on_stop(self, _sig: int, _frame: FrameType | None) -> None:
        self.stop = True

    def on_reload(self, _sig: int, _frame: FrameType | None) -> None:
        self.reload = True


def effective(cfg: Config, force_monitor: bool) -> Config:
    """cfg, in monitor mode when the command line asked for it (``run --monitor``)."""
    if force_monitor and cfg.guard.mode != "monitor":
        return dataclasses.replace(cfg, guard=dataclasses.replace(cfg.guard, mode="monitor"))
    return cfg


def _load_again(cfg: Config, events: EventLog) -> Config:
    """The config file again (as written: without ``--monitor``); ``cfg`` when it is invalid."""
    try:
        return configmod.load(cfg.source) if cfg.source else configmod.Config()
    except configmod.ConfigError as exc:
        events.emit("reload_failed", errors=exc.errors)
        return cfg


def _reload(cfg: Config, events: EventLog, force_monitor: bool) -> Config:
    """The config file again, with ``--monitor`` applied; the old config when it is invalid."""
    new = _load_again(cfg, events)
    return cfg if new is cfg else effective(new, force_monitor)


def _say_override(file_cfg: Config, events: EventLog, force_monitor: bool) -> None:
    """``run --monitor`` on a file that says enforce: the kernel's limit rules still drop."""
    if force_monitor and file_cfg.guard.mode != "monitor":
        events.emit("monitor_override", guard="monitor", rules=file_cfg.guard.mode,
                    source=file_cfg.source or None,
                    hint='the kernel rules follow the config file: set [guard] mode = '
                         '"monitor" there and run floodguard apply for counting-only rules')


class ConntrackFlusher:
    """Forgets banned sources' TCP connections on one background thread, so a ban never waits
    for the conntrack tool (tens of milliseconds, hundreds under load). Bans that arrive
    together are swept together (``conntrack.forget_sources``)."""

    def __init__(self, events: EventLog, v6_prefix: int = 64) -> None:
        self.events = events
        self.v6_prefix = v6_prefix
        self.pending: queue.SimpleQueue[str] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="floodguard-conntrack", daemon=True).start()

    def __call__(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.pending.put(key)

    def _loop(self) -> None:
        from floodguard.kernel import KernelError
        from floodguard.kernel.conntrack import forget_sources

        while True:
            batch = [self.pending.get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < 10_000:
                    batch.append(self.pending.get_nowait())
            try:
                forget_sources(batch, self.v6_prefix)
            except (KernelError, OSError) as exc:
                self.events.emit("conntrack_error", ip=batch[0] if len(batch) == 1 else None,
                                 count=len(batch), error=str(exc))


def run_worker(cfg: Config, queue_num: int, *, events: EventLog | None = None,
               force_monitor: bool = False) -> int:
    """Consume one queue until SIGTERM; returns the exit code."""
    from floodguard.kernel.ipset import SetManager
    from floodguard.kernel.ipset_netlink import NetlinkSetWriter
    from floodguard.kernel.nfqueue import QueueRunner, arrival_clock
    from floodguard.kernel.rules import guard_mark, render

    events = events or EventLog()
    flags = _Flags()
    signal.signal(signal.SIGTERM, flags.on_stop)
    signal.signal(signal.SIGINT, flags.on_stop)
    signal.signal(signal.SIGHUP, flags.on_reload)

    store = Store(cfg.state.path, events=events)  # a damaged file is moved aside (state_corrupt)
    store.defer_checkpoints()  # checkpoints run in Guard.snapshot(), off the packet path
    specs = render(cfg).sets
    with SetManager(specs) as manager:
        manager.ensure()
    sets = NetlinkSetWriter(specs)
    guard = Guard(cfg, sets=sets, store=store, events=events, name=f"engine-q{queue_num}",
                  queue=queue_num, clock=arrival_clock, meter_clock=time.monotonic,
                  flush_conntrack=ConntrackFlusher(events, cfg.limits.ipv6_prefix))
    restored = guard.restore()
    # forward mode: the rules mark what arrives from the registrar's side; that mark, never the
    # ports, makes a packet the registrar's output
    out_mark = guard_mark(which="registrar") if cfg.sip.mode == "forward" else (0, 0)
    runner = QueueRunner(queue_num, guard.handle, fail_open=cfg.queue.fail_open,
                         out_mark=out_mark)
    events.emit("guard_started", queue=queue_num, pid=os.getpid(), restored_bans=restored,
                mode=cfg.guard.mode)
    last_tick = 0.0
    try:
        while not flags.stop:
            runner.poll(POLL_SECONDS)
            if flags.reload:
                flags.reload = False
                new = _reload(cfg, events, force_monitor)
                if new is not cfg:
                    cfg = new
                    guard.reload(cfg)
            now = time.monotonic()
            if now - last_tick >= TICK_SECONDS:
                last_tick = now
                guard.tick()
    finally:
        runner.drain()
        guard.snapshot()
        runner.close()
        sets.close()
        store.close()
        events.emit("guard_stopped", queue=queue_num, packets=runner.packets,
                    callback_errors=runner.errors)
    return 0


def _feeds(cfg: Config, events: EventLog) -> FeedScheduler:
    from floodguard.kernel.conntrack import forget_connections
    from floodguard.kernel.ipset import SetManager
    from floodguard.kernel.rules import render

    scheduler = FeedScheduler(cfg, events, lambda: Store(scheduler.cfg.state.path, events=events),
                              lambda: SetManager(render(scheduler.cfg).sets),
                              forget=forget_connections(cfg.limits.ipv6_prefix, events))
    scheduler.start()
    return scheduler


def _fleet(cfg: Config, events: EventLog) -> FleetLink | None:
    """The fleet link, with the fleet's bans loaded (at most LOAD_TIMEOUT seconds, and not at all
    when Redis is unreachable: the link keeps trying on its own); None without ``[fleet]``."""
    if not cfg.fleet.redis_url:
        return None
    from floodguard.kernel.conntrack import forget_connections
    from floodguard.kernel.ipset import SetManager
    from floodguard.kernel.rules import render

    link = FleetLink(cfg, events, lambda: Store(link.cfg.state.path, events=events),
                     lambda: SetManager(render(link.cfg).sets),
                     forget=forget_connections(cfg.limits.ipv6_prefix, events))
    link.load(LOAD_TIMEOUT)
    return link


def _worker_entry(cfg: Config, queue_num: int, force_monitor: bool, supervisor: int) -> None:
    stop_with(supervisor)  # no orphan keeps the queue should the supervisor be killed
    os._exit(run_worker(cfg, queue_num, force_monitor=force_monitor))


def supervise(cfg: Config, *, events: EventLog | None = None, force_monitor: bool = False) -> int:
    """Start a worker per queue, restart any that die, forward SIGTERM/SIGHUP; returns exit code."""
    events = events or EventLog()
    file_cfg = cfg  # as written: what the rule keeper renders
    _say_override(file_cfg, events, force_monitor)
    cfg = effective(file_cfg, force_monitor)
    flags = _Flags()
    signal.signal(signal.SIGTERM, flags.on_stop)
    signal.signal(signal.SIGINT, flags.on_stop)
    signal.signal(signal.SIGHUP, flags.on_reload)
    ctx = multiprocessing.get_context("fork")
    queues = [cfg.queue.num + i for i in range(cfg.queue.workers)]
    workers: dict[int, multiprocessing.process.BaseProcess] = {}
    backoff: dict[int, float] = dict.fromkeys(queues, 0.5)
    restart_at: dict[int, float] = dict.fromkeys(queues, 0.0)

    def start(queue_num: int) -> None:
        proc = ctx.Process(target=_worker_entry,
                           args=(cfg, queue_num, force_monitor, os.getpid()),
                           name=f"floodguard-q{queue_num}", daemon=False)
        proc.start()
        workers[queue_num] = proc

    fleet = _fleet(cfg, events)  # before the workers: they start with the fleet's bans
    for queue_num in queues:
        start(queue_num)
    if fleet is not None:
        fleet.start()
    try:
        from floodguard.metrics import serve

        serve(cfg)
        events.emit("metrics_listening", listen=cfg.metrics.listen)
    except (OSError, ValueError) as exc:
        events.emit("metrics_error", listen=cfg.metrics.listen, error=str(exc))
    started = time.monotonic()
    control_store = Store(cfg.state.path, events=events)
    keeper = RuleKeeper(file_cfg, events, control_store)
    admission = AdmissionKeeper(cfg, events, control_store)
    feeds = _feeds(cfg, events)
    sd_notify("READY=1")
    ping_every = watchdog_interval()
    last_ping = 0.0
    dead_since: dict[int, float] = {}
    while not flags.stop:
        time.sleep(POLL_SECONDS)
        # the watchdog is fed only while no queue has been without a worker for long: a guard
        # that cannot keep one alive is restarted whole by systemd
        if (ping_every is not None and time.monotonic() - last_ping >= ping_every
                and all(time.monotonic() - t < WORKER_DEAD_LIMIT for t in dead_since.values())):
            sd_notify("WATCHDOG=1")
            last_ping = time.monotonic()
        changed = admission.check()
        keeper.check(admission.rate(), now=changed)
        feeds.cfg = cfg
        if fleet is not None:
            fleet.cfg = cfg
        if flags.reload:
            flags.reload = False
            sd_notify("RELOADING=1")
            new = _load_again(file_cfg, events)
            if new is not file_cfg:
                file_cfg = new
                _say_override(file_cfg, events, force_monitor)
                cfg = effective(file_cfg, force_monitor)
                admission.reload(cfg)
                keeper.reloaded(file_cfg)
                for proc in workers.values():
                    if proc.pid and proc.is_alive():
                        os.kill(proc.pid, signal.SIGHUP)
            sd_notify("READY=1")
        now = time.monotonic()
        for queue_num, proc in list(workers.items()):
            if proc.is_alive():
                dead_since.pop(queue_num, None)
                continue
            dead_since.setdefault(queue_num, now)
            if restart_at[queue_num] == 0.0:
                events.emit("worker_died", queue=queue_num, exitcode=proc.exitcode)
                if now - started > 30:
                    backoff[queue_num] = 0.5
                restart_at[queue_num] = now + backoff[queue_num]
                backoff[queue_num] = min(RESTART_BACKOFF_MAX, backoff[queue_num] * 2)
            elif now >= restart_at[queue_num]:
                restart_at[queue_num] = 0.0
                start(queue_num)
                events.emit("worker_restarted", queue=queue_num, pid=workers[queue_num].pid)
    sd_notify("STOPPING=1")
    feeds.stop()
    for proc in workers.values():
        if proc.pid and proc.is_alive():
            os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in workers.values():
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
    if fleet is not None:
        fleet.stop()  # after the workers: it sends what they journalled last
    return 0
