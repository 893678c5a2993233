"""The fleet link against a real redis-server on loopback (fleet_kit.py starts it).

Nodes are FleetLink objects with their own state store and in-memory kernel sets
(tests/kernelfake.py), stepped by the test. Also: outage and re-sync, tombstones, load at start,
sweep, status, TLS with a password, Sentinel and Cluster URLs. Real servers, so not a unit test;
no root and no network namespace needed. Without redis-server these tests fail (never skip).
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from click.testing import CliRunner

from floodguard import fleet
from floodguard.config import loads
from floodguard.fleet import Keys

from .fleet_kit import (  # noqa: F401 — redis_server, servers: fixtures
    Node,
    free_port,
    nodes,
    redis_server,
    require,
    servers,
)


def test_bans_unbans_and_known_travel_and_are_not_echoed(tmp_path, redis_server):  # noqa: F811
    a, b = nodes(tmp_path, redis_server.url, "a", "b")
    a.store.put_ban("192.0.2.1", "suspend", "consecutive-failures", 180, aor="1001@x",
                    failures=6)
    a.store.put_known("192.0.2.2", 600)
    a.step()
    b.until(lambda: b.banned("192.0.2.1") and ("known", "192.0.2.2") in b.sets.entries)
    assert 178 <= b.sets.entries[("ban", "192.0.2.1")] <= 180
    row = b.store.get_ban("192.0.2.1")
    assert row.reason == "fleet:a:consecutive-failures" and row.aor == "1001@x"
    applied = b.events("fleet_applied")
    assert applied[0]["origin"] == ["a"] and applied[0]["lag_ms"] < 1000
    # what b applied is not journalled, so it never comes back to a
    assert b.store.journal_after(0) == [] and b.link.counts["pushed"] == 0
    a.step(3)
    assert a.store.get_ban("192.0.2.1").reason == "consecutive-failures"
    assert a.link.counts["received"] == 0
    # an unban by hand on b travels back to a
    b.store.delete_ban("192.0.2.1")
    b.step()
    a.until(lambda: a.link.counts["unbans"] == 1)
    assert a.store.get_ban("192.0.2.1") is None
    assert [c.op for c in a.store.take_commands(0)] == ["unban"]


def test_allow_list_of_each_node_wins(tmp_path, redis_server):  # noqa: F811
    a, b, c = nodes(tmp_path, redis_server.url, "a", "b", "c",
                    extra={"b": '[blacklist]\nallow = ["192.0.2.7/32"]\n'})
    a.store.put_ban("192.0.2.7", "manual", "manual", 600)
    a.step()
    c.until(lambda: c.banned("192.0.2.7"))
    b.until(lambda: b.link.counts["allowed"] == 1)
    assert not b.banned("192.0.2.7") and b.store.get_ban("192.0.2.7") is None
    assert b.events("fleet_ban_allowed")[0] == {
        **b.events("fleet_ban_allowed")[0], "ip": "192.0.2.7", "allow": "192.0.2.7/32",
        "origin": "a"}


def test_a_new_node_loads_fleet_bans_before_anything_else(tmp_path, redis_server):  # noqa: F811
    (a,) = nodes(tmp_path, redis_server.url, "a")
    a.store.put_ban("192.0.2.1", "manual", "manual", 600)
    a.store.put_ban("2001:db8::1", "blacklist", "spraying", 600)
    a.store.put_ban("192.0.2.9", "manual", "manual", 600)
    a.store.delete_ban("192.0.2.9")
    a.step()
    late = Node(tmp_path, "late", redis_server.url)
    assert late.link.load(2.0)  # no step yet: this is what supervise() does before the workers
    assert late.banned("192.0.2.1") and late.banned("2001:db8::1")
    assert not late.banned("192.0.2.9")
    loaded = late.events("fleet_loaded")[0]
    assert loaded["complete"] and loaded["bans"] == 2
    # the first step pushes nothing back (same bans) and pulls nothing twice
    late.step()
    assert late.link.up and late.link.counts["pushed"] == 0


def test_unreachable_redis_at_start_is_bounded_and_not_fatal(tmp_path):
    node = Node(tmp_path, "a", f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    assert node.link.load(2.0) is False
    assert time.monotonic() - started < 2.0
    node.store.put_ban("192.0.2.1", "manual", "manual", 600)
    node.step(3)
    down = node.events("fleet_down")
    assert len(down) == 1 and "hunter2" not in node.log.getvalue()
    assert node.store.get_ban("192.0.2.1") is not None  # works alone


def test_redis_restart_loses_nothing(tmp_path, redis_server):  # noqa: F811
    a, b = nodes(tmp_path, redis_server.url, "a", "b")
    a.store.put_ban("192.0.2.1", "manual", "manual", 600)
    a.step()
    b.until(lambda: b.banned("192.0.2.1"))
    redis_server.stop()
    # while Redis is away both nodes keep banning on their own
    a.store.put_ban("192.0.2.2", "suspend", "consecutive-failures", 600)
    b.store.put_ban("192.0.2.3", "manual", "manual", 600)
    a.step(2)
    b.step(2)
    assert not a.link.up and not b.link.up
    assert len(a.events("fleet_down")) == 1
    snapshot = a.store.load_snapshot("fleet")[1]
    assert snapshot["up"] is False and snapshot["journal_backlog"] == 1
    redis_server.start()  # empty: no persistence
    a.until(lambda: a.link.up, 10)
    b.until(lambda: b.link.up, 10)
    a.until(lambda: a.banned("192.0.2.3"))
    b.until(lambda: b.banned("192.0.2.2"))
    assert a.events("fleet_up")[-1]["pushed"] >= 2
    # Redis holds every ban again, the ones made before the restart too
    client = fleet.connect(redis_server.url)
    assert sorted(k.decode() for k in client.hkeys(Keys("floodguard").bans)) == [
        "192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert a.link.reconnects == 1


def test_an_unban_missed_while_away_wins_over_the_stale_ban(tmp_path, redis_server):  # noqa: F811
    a, b = nodes(tmp_path, redis_server.url, "a", "b")
    a.store.put_ban("192.0.2.1", "manual", "manual", 600)
    a.step()
    b.until(lambda: b.banned("192.0.2.1"))
    b.link._down(ConnectionError("test partition"))  # b misses what follows
    a.store.delete_ban("192.0.2.1")
    a.step()
    # back again, b must not push its copy of the ban: the tombstone is newer
    b.until(lambda: b.link.up, 10)
    assert not b.banned("192.0.2.1") and b.store.get_ban("192.0.2.1") is None
    client = fleet.connect(redis_server.url)
    assert json.loads(client.hget("floodguard:bans", "192.0.2.1"))["op"] == "unban"
    # a new ban after the unban replaces the tombstone
    a.store.put_ban("192.0.2.1", "manual", "manual", 600)
    a.step()
    b.until(lambda: b.banned("192.0.2.1"))


def test_redis_merge_rules(tmp_path, redis_server):  # noqa: F811
    (a,) = nodes(tmp_path, redis_server.url, "a")
    link = a.link
    now = time.time()

    def entry():
        return json.loads(link.client.hget("floodguard:bans", "192.0.2.1"))

    base = {"ip": "192.0.2.1", "node": "a", "kind": "manual", "reason": "r", "aor": None,
            "failures": 0}
    assert link._send([{**base, "op": "ban", "ts": now, "until": now + 100}]) == 1
    assert link._send([{**base, "op": "ban", "ts": now + 1, "until": now + 50}]) == 0
    assert link._send([{**base, "op": "ban", "ts": now + 1, "until": now + 200}]) == 1
    assert link._send([{"op": "unban", "ip": "192.0.2.1", "node": "a", "ts": now - 5,
                        "until": now + 3600}]) == 0
    assert link._send([{"op": "unban", "ip": "192.0.2.1", "node": "a", "ts": now + 2,
                        "until": now + 10}]) == 1
    assert entry()["op"] == "unban" and entry()["until"] == pytest.approx(now + 200, abs=0.01)
    assert link._send([{**base, "op": "ban", "ts": now + 1.5, "until": now + 900}]) == 0
    assert link._send([{**base, "op": "ban", "ts": now + 3, "until": now + 900}]) == 1
    assert entry()["op"] == "ban" and entry()["aor"] is None


def test_heartbeats_sweep_and_fleet_status(tmp_path, redis_server):  # noqa: F811
    a, b = nodes(tmp_path, redis_server.url, "a", "b",
                 extra={"b": '[blacklist]\nallow = ["192.0.2.7/32"]\n'})
    client = fleet.connect(redis_server.url)
    now = time.time()
    client.hset("floodguard:bans", mapping={
        "192.0.2.50": json.dumps({"op": "ban", "ip": "192.0.2.50", "ts": now - 900,
                                  "until": now - 600, "node": "x"}),
        "junk": "not json"})
    for ip in ("192.0.2.1", "192.0.2.7"):
        a.store.put_ban(ip, "manual", "manual", 600)
    a.step()
    b.until(lambda: b.banned("192.0.2.1") and b.link.counts["allowed"] == 1)
    b.sets.entries[("ban", "198.51.100.1")] = 50  # something only b's kernel holds
    for node in (a, b):
        node.link._next_sweep = 0.0
        node.link._last_heartbeat = 0.0
        node.step(4)
    assert client.hget("floodguard:bans", "192.0.2.50") is None
    assert client.hget("floodguard:bans", "junk") is None
    stats = client.hgetall("floodguard:stats")
    assert int(float(stats[b"bans"])) == 2 and int(float(stats[b"deleted"])) == 2
    b.link._snapshot(b.store, force=True)
    data = fleet.report(b.cfg, b.store, b.sets)
    assert [n["node"] for n in data["nodes"]] == ["a", "b"]
    assert all(n["alive"] for n in data["nodes"])
    assert data["redis"] == {"ok": True, "bans": 2, "tombstones": 0, "known": 0,
                             "allow_entries": 0}
    assert data["compare"]["missing_here"] == 0 and data["compare"]["allow_listed"] == 1
    assert data["compare"]["only_here"] == 1 and data["local"]["set"] == 2
    assert data["link"]["up"] and data["link"]["running"]
    # the CLI (no root here: it compares against the store and says so)
    config = tmp_path / "b.toml"
    config.write_text(f'[state]\npath = "{b.path}"\n[fleet]\nredis_url = "{redis_server.url}"\n'
                      'node = "b"\n[blacklist]\nallow = ["192.0.2.7/32"]\n')
    from floodguard.cli import main

    result = CliRunner().invoke(main, ["fleet", "status", "-c", str(config), "--json"])
    shown = json.loads(result.stdout)
    assert shown["redis"]["bans"] == 2 and shown["link"]["up"], result.output
    text = CliRunner().invoke(main, ["fleet", "status", "-c", str(config)]).stdout
    assert "bans in Redis: 2" in text and "(this node)" in text
    a.link.stop()
    a.link._finish(a.store, a.sets)  # a goodbye heartbeat
    assert fleet.report(b.cfg, b.store, b.sets)["nodes"][0]["stopped"] is True


def test_fleet_status_without_fleet_or_redis(tmp_path):
    from floodguard.cli import main

    config = tmp_path / "f.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n')
    result = CliRunner().invoke(main, ["fleet", "status", "-c", str(config)])
    assert result.exit_code == 3 and "no fleet configured" in result.output
    config.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n[fleet]\n'
                      f'redis_url = "redis://:pw@127.0.0.1:{free_port()}/0"\n')
    result = CliRunner().invoke(main, ["fleet", "status", "-c", str(config)])
    assert result.exit_code == 1 and "redis: UNREACHABLE" in result.output
    assert ":pw@" not in result.output


def test_status_and_metrics_show_the_link(tmp_path, redis_server, monkeypatch):  # noqa: F811
    from prometheus_client import generate_latest
    from prometheus_client.registry import CollectorRegistry

    from floodguard import metrics, status

    a, b = nodes(tmp_path, redis_server.url, "a", "b")
    a.store.put_ban("192.0.2.1", "manual", "manual", 600)
    a.step()
    b.until(lambda: b.banned("192.0.2.1"))
    b.link._last_heartbeat = 0.0
    b.step()
    b.link._snapshot(b.store, force=True)
    monkeypatch.setattr(status, "_kernel", lambda cfg: {"ok": True, "installed": True})
    data = status.collect(b.cfg)
    assert data["fleet"]["up"] and data["fleet"]["counts"]["bans"] == 1
    assert not [p for p in data["health"] if "fleet" in p]
    monkeypatch.setattr(metrics, "collect", lambda cfg: data)
    registry = CollectorRegistry()
    registry.register(metrics.FloodguardCollector(b.cfg))
    text = generate_latest(registry).decode()
    assert "floodguard_fleet_up 1.0" in text
    assert 'floodguard_fleet_changes_total{direction="in",what="bans"} 1.0' in text
    assert 'floodguard_fleet_bans{where="store"} 1.0' in text
    assert "floodguard_fleet_apply_lag_seconds_count 1.0" in text
    b.link._down(ConnectionError("gone"))
    b.link._snapshot(b.store, force=True)
    data = status.collect(b.cfg)
    assert any("fleet link down (gone)" in p for p in data["health"])
    assert status.collect(loads(f'[state]\npath = "{b.path}"\n'))["fleet"] is None


def test_tls_with_password(tmp_path, servers):  # noqa: F811
    require("openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    server = servers("--tls-cert-file", str(cert), "--tls-key-file", str(key),
                     "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
                     "--requirepass", "s3cret", tls=True)
    url = f"rediss://:s3cret@127.0.0.1:{server.port}/0?ssl_ca_certs={cert}"
    a, b = nodes(tmp_path, url, "a", "b")
    a.store.put_ban("192.0.2.1", "manual", "manual", 600)
    a.step()
    b.until(lambda: b.banned("192.0.2.1"))
    wrong = Node(tmp_path, "c", url.replace("s3cret", "wrong"))
    assert wrong.link.load(2.0) is False
    assert "wrong" not in wrong.log.getvalue() and wrong.events("fleet_down")


def test_unix_socket_url(tmp_path, servers):  # noqa: F811
    sock = tmp_path / "redis.sock"
    servers("--unixsocket", str(sock), "--unixsocketperm", "700")
    a, b = nodes(tmp_path, f"unix://{sock}?db=1", "a", "b")
    a.store.put_ban("192.0.2.1", "manual", "manual", 600)
    a.step()
    b.until(lambda: b.banned("192.0.2.1"))


def test_sentinel_url(tmp_path, servers):  # noqa: F811
    master = servers()
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n")
    servers("--sentinel", port=port, name="sentinel", conf=conf)
    a, b = nodes(tmp_path, f"redis+sentinel://127.0.0.1:{port}/mymaster/0", "a", "b")
    a.store.put_ban("192.0.2.1", "manual", "manual", 600)
    a.step()
    b.until(lambda: b.banned("192.0.2.1"))
    assert fleet.connect(master.url).hget("floodguard:bans", "192.0.2.1") is not None


def test_cluster_url(tmp_path, servers):  # noqa: F811
    require("redis-cli")
    members = [servers("--cluster-enabled", "yes", "--cluster-config-file",
                       str(tmp_path / f"nodes-{i}.conf"), name=f"cluster{i}") for i in range(3)]
    subprocess.run(["redis-cli", "--cluster", "create",
                    *(f"127.0.0.1:{m.port}" for m in members), "--cluster-replicas", "0",
                    "--cluster-yes"], check=True, capture_output=True, timeout=30)
    deadline = time.monotonic() + 15
    while b"cluster_state:ok" not in subprocess.run(
            ["redis-cli", "-p", str(members[0].port), "cluster", "info"],
            capture_output=True).stdout:
        assert time.monotonic() < deadline, "cluster did not come up"
        time.sleep(0.1)
    a, b = nodes(tmp_path, f"redis+cluster://127.0.0.1:{members[1].port}", "a", "b")
    a.store.put_ban("192.0.2.1", "manual", "manual", 600)
    a.store.put_known("192.0.2.2", 600)
    a.step()
    b.until(lambda: b.banned("192.0.2.1") and ("known", "192.0.2.2") in b.sets.entries)


def poison(now: float) -> dict[str, str]:
    """Entries written straight into Redis by someone who can write to it (or a buggy node)."""
    def entry(ip: str, **over) -> str:
        return json.dumps({"op": "ban", "ip": ip, "ts": now, "until": now + 600, "node": "evil",
                           "kind": "manual", "reason": "poison", "failures": 1, **over})

    return {
        "192.0.2.50": entry("192.0.2.50", failures=10**23),  # the one that wedged the link
        "192.0.2.51": entry("192.0.2.51", failures=-3),
        "192.0.2.52": entry("192.0.2.52", ts=float("nan")),  # json writes NaN, json reads it
        "192.0.2.53": entry("192.0.2.53", until=1e300),
        "192.0.2.54": entry("192.0.2.54", ts=now + 86400 * 365),  # an unban "from the future"
        "192.0.2.55": entry("192.0.2.55", kind="x" * 5000),
        "192.0.2.56": entry("192.0.2.56", ts="yesterday"),
        "0.0.0.0": entry("0.0.0.0"),
        "224.0.0.1": entry("224.0.0.1"),
        "deep": "[" * 2000 + "]" * 2000,
        "huge": entry("192.0.2.57", reason="r" * 100000),
        "junk": "not json",
    }


def good(now: float, *ips: str) -> dict[str, str]:
    return {ip: json.dumps({"op": "ban", "ip": ip, "ts": now, "until": now + 600, "node": "x",
                            "kind": "manual", "reason": "ok", "failures": 2}) for ip in ips}


def test_poisoned_entries_are_skipped_and_reported_the_rest_applies(tmp_path, redis_server):  # noqa: F811
    client = fleet.connect(redis_server.url)
    now = time.time()
    client.hset("floodguard:bans", mapping={**poison(now), **good(now, "198.51.100.1",
                                                                   "2001:db8::1")})
    # a ban with a long, terminal-hostile reason is applied, its reason cut and cleaned
    client.hset("floodguard:bans", "198.51.100.2", json.dumps({
        "op": "ban", "ip": "::ffff:198.51.100.2", "ts": now, "until": now + 600, "node": "x",
        "reason": "\x1b[2J" + "A" * 1000}))
    b = Node(tmp_path, "b", redis_server.url)
    assert b.link.load(2.0)  # the pull at start went through all of it
    for ip in ("198.51.100.1", "2001:db8::1", "198.51.100.2"):
        assert b.banned(ip) and b.store.get_ban(ip) is not None, ip
    assert b.store.get_ban("198.51.100.2").reason == "fleet:x:?[2J" + "A" * 252
    assert not any(ip.startswith(("192.0.2.", "0.", "224.")) for _, ip in b.sets.entries)
    invalid = b.events("fleet_invalid")
    assert sum(e["count"] for e in invalid) == 12 and b.link.counts["invalid"] == 12
    examples = [x for e in invalid for x in e["examples"]]
    assert examples and all(len(e["examples"]) <= 5 for e in invalid)
    assert all(x.split(": ", 1)[0].strip("'") in poison(now) and len(x) < 200 for x in examples)
    # the link comes up and stays up, re-reading the poison on every re-sync
    b.until(lambda: b.link.up)
    b.link._down(OSError("cut"))
    b.link.retry_at = 0.0
    b.until(lambda: b.link.up)
    assert not b.events("fleet_error")
    # live: poisoned changes published on the channel are skipped one by one, the rest applies
    evil = [json.loads(v) if v.startswith("{") else v for v in poison(time.time()).values()]
    client.publish("floodguard", json.dumps({"node": "evil", "changes": [
        *evil, *(json.loads(v) for v in good(time.time(), "198.51.100.3").values())]}))
    client.publish("floodguard", "garbage")
    client.publish("floodguard", json.dumps({"node": "n" * 10000, "changes": 5}))
    b.until(lambda: b.banned("198.51.100.3"))
    b.step(3)
    assert b.link.up and not b.events("fleet_error")
    # this node's own ban of an address whose Redis entry is malformed still gets pushed
    client.hset("floodguard:bans", "203.0.113.9", json.dumps({"op": "ban", "ts": "x",
                                                              "until": "y"}))
    b.store.put_ban("203.0.113.9", "manual", "manual", 600)
    b.step(2)
    assert json.loads(client.hget("floodguard:bans", "203.0.113.9"))["node"] == "b"
    assert b.link.up and not b.events("fleet_error")
    # garbage heartbeats and stats do not break the link or the status report
    client.hset("floodguard:nodes", mapping={"x": json.dumps({"ts": "soon", "bans_set": "∞"}),
                                             "y": "[[[", "z" * 1000: "{}"})
    client.hset("floodguard:stats", mapping={"bans": "lots"})
    b.link._last_heartbeat = 0.0
    b.link._next_sweep = 0.0
    b.step(4)
    assert b.link.up and not b.events("fleet_error") and b.link.state()["nodes"]["x"]["age"] > 0
    assert fleet.report(b.cfg, b.store, b.sets)["redis"]["ok"]
    client.close()
