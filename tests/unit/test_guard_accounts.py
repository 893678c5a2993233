"""The guard's side of account protection (issue #16 item 4): the store row and the `protect`
event, REGISTERs for the account dropped from sources that are not its known-good pairs, kept
across a restart, the end as an event, the operator's lift, and monitor mode."""

from __future__ import annotations

import json

from floodguard.config import loads
from floodguard.guard import HOOK_LOCAL_IN
from floodguard.store import HOLD_ACCOUNT
from tests.sipmsg import register, udp
from tests.unit.test_guard import SERVER, attempt, rig  # noqa: F401 (rig: a fixture)

OWNER = "192.0.2.77"


def _guessed(guard, clock) -> None:
    """The owner registers 1001, then five sources each fail once on it."""
    clock.t += 1
    assert attempt(guard, OWNER, "1001", "pw", 1, "owner", 1, final=200)
    for i in range(5):
        clock.t += 1
        assert attempt(guard, f"198.51.100.{20 + i}", "1001", "guess", 10 + i, f"g{i}", 1)


def _events(log) -> list[dict]:
    return [json.loads(line) for line in log.getvalue().splitlines()]


def test_the_account_is_protected_kept_over_a_restart_and_its_end_is_told(rig):  # noqa: F811
    guard, sets, store, log, clock = rig()
    _guessed(guard, clock)
    (row,) = store.active_holds(HOLD_ACCOUNT, now=guard.wall())
    assert row.key.startswith("1001@") and row.count == 5 and row.level == 1
    assert round(row.remaining(guard.wall())) == 180
    (event,) = [e for e in _events(log) if e["event"] == "protect"]
    assert event["aor"] == row.key and event["sources"] == 5 and event["by"] == "guard"
    assert not any(kind == "ban" for kind, _ in sets.entries)  # no source stopped
    other = udp("198.51.100.99", SERVER, 5060, 5060,
                register("1001", src="198.51.100.99", call_id="o", cseq=1))
    assert guard.handle(other, HOOK_LOCAL_IN) is False
    assert guard.counters["drop:protected:account"] == 1
    clock.t += 1
    assert attempt(guard, OWNER, "1001", "pw", 2, "owner2", 1, final=200)
    guard.tick()  # known-good pairs reach the store
    again, *_ = rig(clock=clock)
    again.restore()
    assert again.handle(other, HOOK_LOCAL_IN) is False
    clock.t += 181
    guard.tick()
    (end,) = [e for e in _events(log) if e["event"] == "protect_end"]
    assert end["aor"] == row.key and end["reason"] == "expired"
    assert store.active_holds(HOLD_ACCOUNT, now=guard.wall()) == []
    assert guard.handle(other, HOOK_LOCAL_IN) is not False


def test_the_operator_lifts_it_through_a_command(rig):  # noqa: F811
    guard, _, store, _, clock = rig()
    _guessed(guard, clock)
    (row,) = store.active_holds(HOLD_ACCOUNT, now=guard.wall())
    store.queue_command("unprotect", row.key)
    guard.tick()
    other = udp("198.51.100.98", SERVER, 5060, 5060,
                register("1001", src="198.51.100.98", call_id="p", cseq=1))
    assert guard.handle(other, HOOK_LOCAL_IN) is not False


def test_monitor_mode_says_it_would_protect(rig):  # noqa: F811
    guard, _, store, log, clock = rig(loads('[guard]\nmode = "monitor"\n'))
    _guessed(guard, clock)
    assert store.active_holds(HOLD_ACCOUNT, now=guard.wall()) == []
    (would,) = [e for e in _events(log) if e["event"] == "would_protect"]
    assert would["aor"].startswith("1001@") and would["sources"] == 5
    assert guard.counters["would-ban:account"] == 1
