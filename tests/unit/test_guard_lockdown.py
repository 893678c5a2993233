"""The guard's side of a lockdown (issue #16 item 3): a store row and a `lockdown` event instead
of a kernel ban, REGISTERs for AORs that are not the address's known-good pairs dropped, kept
over a restart, the end as an event, the operator's unban lifting it, and monitor mode."""

from __future__ import annotations

import json

from floodguard.config import loads
from floodguard.explain import explain_source, render
from floodguard.guard import HOOK_LOCAL_IN
from floodguard.store import HOLD_LOCKDOWN
from tests.sipmsg import register, udp
from tests.unit.test_guard import SERVER, attempt, rig  # noqa: F401 (rig: a fixture)

NAT = "198.51.100.40"


def _sprayed(guard, clock) -> None:
    """A phone registers from NAT (a known-good pair), then five AORs fail from there."""
    clock.t += 1
    assert attempt(guard, NAT, "1002", "pw", 1, "phone", 1, final=200)
    for i in range(5):
        clock.t += 1
        assert attempt(guard, NAT, f"9{i}", "guess", 10 + i, f"g{i}", 1)


def _events(log) -> list[dict]:
    return [json.loads(line) for line in log.getvalue().splitlines()]


def test_a_sprayed_shared_address_is_locked_down_not_banned(rig):  # noqa: F811
    guard, sets, store, log, clock = rig()
    _sprayed(guard, clock)
    assert not any(kind == "ban" for kind, _ in sets.entries)
    (row,) = store.active_holds(HOLD_LOCKDOWN, now=guard.wall())
    assert (row.key, row.count, row.level) == (NAT, 5, 1)
    (event,) = [e for e in _events(log) if e["event"] == "lockdown"]
    assert event["ip"] == NAT and event["seconds"] == 3600 and event["by"] == "guard"
    # in the kernel too: the phone's UDP (address, port) passes, the rest of NAT is dropped
    assert event["kernel"] is True and event["passes"] == 1, event
    assert sets.entries[("lockdown", NAT)] == 3600
    assert sets.entries[("pass", f"{NAT},udp:5060")] == 3600
    guess = udp(NAT, SERVER, 5060, 5060, register("99", src=NAT, call_id="z", cseq=1))
    assert guard.handle(guess, HOOK_LOCAL_IN) is False
    assert guard.counters["drop:lockdown"] == 1
    guard.publish_counters()  # explain tells why the guard dropped it last
    report = explain_source(guard.cfg, store, NAT, now=guard.wall())
    assert report["guard"]["last_drop"] == "lockdown" and report["guard"]["drops"] == 1
    assert "the last for lockdown" in render(report)
    clock.t += 1
    assert attempt(guard, NAT, "1002", "pw", 2, "phone2", 1, final=200)
    guard.tick()
    assert explain_source(guard.cfg, store, NAT, now=guard.wall())["verdict"].startswith(
        "in lockdown for 3")
    again, *_ = rig(clock=clock)
    again.restore()
    assert again.handle(guess, HOOK_LOCAL_IN) is False
    clock.t += 3601
    guard.tick()
    (end,) = [e for e in _events(log) if e["event"] == "lockdown_end"]
    assert end["ip"] == NAT and end["reason"] == "expired"
    assert store.active_holds(HOLD_LOCKDOWN, now=guard.wall()) == []
    assert guard.handle(guess, HOOK_LOCAL_IN) is not False


def test_monitor_mode_says_it_would_lock_down(rig):  # noqa: F811
    guard, _, store, log, clock = rig(loads('[guard]\nmode = "monitor"\n'))
    _sprayed(guard, clock)
    assert store.active_holds(HOLD_LOCKDOWN, now=guard.wall()) == []
    (would,) = [e for e in _events(log) if e["event"] == "would_lockdown"]
    assert would["ip"] == NAT and would["failures"] == 5


def test_a_phone_registering_during_the_lockdown_gets_through_and_unban_lifts_it(rig):  # noqa: F811
    guard, sets, store, log, clock = rig()
    _sprayed(guard, clock)
    assert ("lockdown", NAT) in sets.entries
    # a known-good phone answered on another port (here the kernel is a fake and lets it
    # reach the guard; a real phone whose mapping moves waits for the lockdown's end): that
    # port is let through in the kernel at once
    clock.t += 1
    assert attempt(guard, NAT, "1002", "pw", 7, "m", 1, final=200, port=6000)
    assert 3590 <= sets.entries[("pass", f"{NAT},udp:6000")] <= 3600
    guard.enforce.end_lockdown(NAT, reason="operator")
    assert ("lockdown", NAT) not in sets.entries


def test_after_a_restart_the_lockdown_stays_with_the_guard(rig):  # noqa: F811
    """The restarted guard does not know its phones' ports: a kernel lockdown would drop them,
    so the guard alone enforces the next one (and says so)."""
    guard, sets, store, log, clock = rig()
    clock.t += 1
    assert attempt(guard, NAT, "1002", "pw", 1, "phone", 1, final=200)
    guard.tick()
    guard.snapshot()
    again, again_sets, _, again_log, _ = rig(clock=clock)
    again.restore()
    for i in range(5):
        clock.t += 1
        assert attempt(again, NAT, f"9{i}", "guess", 10 + i, f"g{i}", 1)
    (event,) = [e for e in _events(again_log) if e["event"] == "lockdown"]
    assert event["kernel"] is False and event["passes"] is None, event
    assert not any(kind in ("lockdown", "pass") for kind, _ in again_sets.entries)
    guess = udp(NAT, SERVER, 5060, 5060, register("99", src=NAT, call_id="z", cseq=1))
    assert again.handle(guess, HOOK_LOCAL_IN) is False
