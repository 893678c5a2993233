"""The run-time allow list (``floodguard allow``) shared by the fleet through a real redis-server
(issue #17 item 11), as bans are: nodes are FleetLink objects stepped by the test (see
fleet_kit.py, whose Redis fixtures and nodes these are). Without redis-server these tests
fail (never skip)."""

from __future__ import annotations

import json
import time

import pytest

from floodguard import fleet
from floodguard.enforce import Enforcer
from floodguard.events import EventLog

from .fleet_kit import nodes, redis_server, servers  # noqa: F401 — fixtures

NET = "192.0.2.0/28"


def test_an_allow_travels_lifts_bans_and_wins_over_later_fleet_bans(tmp_path, redis_server):  # noqa: F811
    a, b, c = nodes(tmp_path, redis_server.url, "a", "b", "c")
    b.store.put_ban("192.0.2.5", "manual", "manual", 600, journal=False)  # b's own ban
    b.sets.add("ban", "192.0.2.5", 600)
    operator = Enforcer(a.store, a.sets, EventLog(a.log, True), by="operator", forget=None)
    operator.allow(NET, None, reason="office")  # as `floodguard allow add` on a
    a.step()
    b.until(lambda: b.link.counts["allows"] == 1)
    row = b.store.active_allows()[0]
    assert (row.net, row.reason, row.until) == (NET, "fleet:a:office", None)
    assert b.sets.test("allow", "192.0.2.3") and not b.banned("192.0.2.5")
    assert b.store.get_ban("192.0.2.5") is None
    assert {(cmd.op, cmd.ip) for cmd in b.store.take_commands(0)} >= {("allow", NET)}
    assert b.store.journal_after(0) == []  # not echoed back to the fleet
    # a later fleet ban of a source inside it never enters b's kernel
    c.store.put_ban("192.0.2.9", "manual", "manual", 600)
    c.step()
    b.until(lambda: b.link.counts["allowed"] == 1)
    assert not b.banned("192.0.2.9")
    # a node that joins later pulls the allow before the bans
    (d,) = nodes(tmp_path, redis_server.url, "d")
    assert [r.net for r in d.store.active_allows()] == [NET] and not d.banned("192.0.2.9")
    assert fleet.report(b.cfg, b.store, b.sets)["redis"]["allow_entries"] == 1
    # removal travels too; the ban that came while it was allowed stays lifted
    operator.disallow(NET, reason="manual")
    a.step()
    b.until(lambda: b.link.counts["disallows"] == 1)
    assert b.store.active_allows() == [] and not b.sets.test("allow", "192.0.2.3")


def test_allow_merge_rules_in_redis(tmp_path, redis_server):  # noqa: F811
    (a,) = nodes(tmp_path, redis_server.url, "a")
    link, now = a.link, time.time()

    def entry():
        return json.loads(link.client.hget("floodguard:allow", NET))

    base = {"op": "allow", "ip": NET, "node": "a", "reason": "r"}
    assert link._send([{**base, "ts": now, "until": now + 100}]) == 1
    assert link._send([{**base, "ts": now + 1, "until": 0}]) == 1  # until removed: longer
    assert link._send([{**base, "ts": now + 2, "until": now + 500}]) == 0  # never shortened
    assert link._send([{"op": "disallow", "ip": NET, "node": "a", "ts": now - 5,
                        "until": now + 3600}]) == 0  # older than the allow
    assert link._send([{"op": "disallow", "ip": NET, "node": "a", "ts": now + 3,
                        "until": now + 3600}]) == 1
    assert entry()["op"] == "disallow"
    assert link._send([{**base, "ts": now + 4, "until": 0}]) == 1
    assert entry() == {**base, "ts": pytest.approx(now + 4), "until": 0}
