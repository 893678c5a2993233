"""The guard honours the run-time allow list (``floodguard allow``): an entry added while it runs
lifts the source's ban in the engine and no failure bans it again; an entry that runs out ends
in the engine and leaves the kernel allow set; a restart restores the list before the bans."""

from __future__ import annotations

import io
import json
import time

from floodguard.allows import AllowBook
from floodguard.bans import BanBook
from floodguard.config import Config
from floodguard.events import EventLog
from floodguard.guard import HOOK_LOCAL_IN, Guard
from floodguard.store import Store
from tests.kernelfake import KernelSets
from tests.sipmsg import register, udp
from tests.unit.test_guard import SERVER, Clock, attempt

CLIENT = "198.51.100.7"


def _guard(tmp_path, clock: Clock) -> tuple[Guard, KernelSets, Store, io.StringIO]:
    log = io.StringIO()
    cfg = Config()
    sets = KernelSets(cfg)
    store = Store(tmp_path / "state.db")
    guard = Guard(cfg, sets=sets, store=store, events=EventLog(log, True), clock=clock,
                  wall=lambda: clock.t + 1_700_000_000)
    return guard, sets, store, log


def _fail_six(guard: Guard, clock: Clock, first: int) -> None:
    for i in range(first, first + 6):
        clock.t += 1
        attempt(guard, CLIENT, "1001", "wrong", i, f"c{i}", 1)


def test_a_runtime_allow_lifts_the_ban_and_prevents_the_next(tmp_path):
    clock = Clock()
    clock.t = time.time() - 1_700_000_000  # the operator's commands use the real time
    guard, sets, store, log = _guard(tmp_path, clock)
    _fail_six(guard, clock, 0)
    assert ("ban", CLIENT) in sets.entries
    book = BanBook(guard.cfg, store, sets, events=EventLog(log, True), forget=lambda ips: None)
    row, lifted = AllowBook(guard.cfg, book).add(CLIENT, 30, "office")
    assert lifted == [CLIENT] and row.net == f"{CLIENT}/32"
    assert ("allow", f"{CLIENT}/32") in sets.entries and ("ban", CLIENT) not in sets.entries
    guard.tick()  # takes the allow command
    assert guard.engine.is_allowed(CLIENT)
    _fail_six(guard, clock, 10)
    assert ("ban", CLIENT) not in sets.entries and store.get_ban(CLIENT) is None
    req = udp(CLIENT, SERVER, 5060, 5060, register("1001", src=CLIENT, call_id="z", cseq=1))
    assert guard.handle(req, HOOK_LOCAL_IN) is not False

    clock.t += 31  # the entry runs out: the guard notices without being told
    guard.tick()
    assert not guard.engine.is_allowed(CLIENT)
    assert ("allow", f"{CLIENT}/32") not in sets.entries
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [(e["event"], e["reason"]) for e in events if e["event"].startswith("allow")] == [
        ("allow", "office"), ("allow_end", "expired")]
    _fail_six(guard, clock, 20)
    assert ("ban", CLIENT) in sets.entries


def test_a_restarted_guard_restores_the_allow_list_before_the_bans(tmp_path):
    clock = Clock()
    clock.t = time.time() - 1_700_000_000
    guard, sets, store, _ = _guard(tmp_path, clock)
    _fail_six(guard, clock, 0)
    store.put_allow(f"{CLIENT}/32", "office", None, journal=False)  # e.g. from the fleet
    again, sets2, _, _ = _guard(tmp_path, clock)
    again.restore()
    assert again.engine.is_allowed(CLIENT) and not again.engine.is_banned(clock.t, CLIENT)
    assert ("ban", CLIENT) not in sets2.entries
