"""Fleet pieces without Redis: config, URLs, changes and merge rules, applying to a node."""

import pytest

from floodguard.bans import allowed_by
from floodguard.config import Config, ConfigError, dumps, loads
from floodguard.fleet import (
    AllowList,
    Applier,
    FleetError,
    KernelWriter,
    change_from_journal,
    change_from_row,
    connect,
    netlink_writer,
    redact,
    split_origin,
    supersedes,
    valid_change,
)
from floodguard.store import Store
from tests.kernelfake import KernelSets


def ban(ip, ts, until, **extra):
    return {"op": "ban", "ip": ip, "ts": ts, "until": until, "node": "a", "kind": "suspend",
            "reason": "consecutive-failures", "aor": "1001@x", "failures": 6, **extra}


def unban(ip, ts, until=None):
    return {"op": "unban", "ip": ip, "ts": ts, "until": until or ts + 3600, "node": "a"}


# ---------------------------------------------------------------- config


def test_fleet_config_defaults_validation_and_round_trip():
    cfg = Config()
    assert cfg.fleet.redis_url == "" and cfg.fleet.channel == "floodguard"
    cfg = loads('[fleet]\nredis_url = "rediss://:pw@redis.example:6380/2"\nnode = "edge-1"\n')
    assert cfg.fleet.node == "edge-1"
    assert loads(dumps(cfg)) == cfg
    for url in ("redis+sentinel://s1:26379,s2:26379/mymaster", "redis+cluster://c1:7000",
                "unix:///run/redis.sock"):
        assert loads(f'[fleet]\nredis_url = "{url}"\n').fleet.redis_url == url
    with pytest.raises(ConfigError) as err:
        loads('[fleet]\nredis_url = "http://x"\nnode = "a b"\nchannel = ""\nport = 1\n')
    text = "\n".join(err.value.errors)
    assert "fleet.redis_url: must be empty or a URL starting with redis://" in text
    assert "fleet.node: must be a string without spaces" in text
    assert "fleet.channel: must be a non-empty string" in text
    assert "fleet.port: unknown key" in text


# ---------------------------------------------------------------- URLs


def test_redact_hides_passwords_only():
    assert redact("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert redact("rediss://user:s3cret@h/1") == "rediss://user:***@h/1"
    assert redact("redis://h:6379/0") == "redis://h:6379/0"
    shown = redact("redis+sentinel://:pw@a:1,b:2/m?sentinel_password=x&ssl_ca_certs=/ca")
    assert "pw" not in shown and "=x" not in shown and "ssl_ca_certs=/ca" in shown


def test_connect_builds_clients_for_each_scheme_without_connecting():
    from redis import Redis

    client = connect("rediss://:pw@127.0.0.1:6390/3")
    kwargs = client.connection_pool.connection_kwargs
    assert isinstance(client, Redis) and kwargs["password"] == "pw" and kwargs["db"] == 3
    master = connect("redis+sentinel://:pw@127.0.0.1:1,[::1]:2/mymaster/4"
                     "?sentinel_password=spw")
    pool = master.connection_pool
    assert pool.service_name == "mymaster"
    assert pool.connection_kwargs["password"] == "pw" and pool.connection_kwargs["db"] == 4
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [1, 2]
    assert sentinels[1].connection_pool.connection_kwargs["host"] == "::1"
    assert sentinels[0].connection_pool.connection_kwargs["password"] == "spw"
    with pytest.raises(FleetError):
        connect("redis+sentinel://127.0.0.1:1")  # no service name


# ---------------------------------------------------------------- changes and merge rules


def test_journal_entries_become_changes(tmp_path):
    store = Store(tmp_path / "s.db")
    store.put_ban("192.0.2.1", "suspend", "consecutive-failures", 180, aor="1001@x",
                  failures=6, now=1000)
    store.delete_ban("192.0.2.1")
    store.put_known("192.0.2.2", 600, now=1000)
    store.put_ban("192.0.2.3", "manual", "fleet:b:spraying", 60, now=1000)
    ban_, unban_, known, relayed = (change_from_journal(e, "a") for e in store.journal_after(0))
    assert ban_ == {"op": "ban", "ip": "192.0.2.1", "kind": "suspend",
                    "reason": "consecutive-failures", "aor": "1001@x", "failures": 6,
                    "until": 1180.0, "ts": 1000, "node": "a"}
    assert unban_["op"] == "unban" and unban_["until"] > unban_["ts"]
    assert known == {"op": "known", "ip": "192.0.2.2", "ts": 1000, "until": 1600.0, "node": "a"}
    # a ban that came from node b keeps b as its origin when it is re-stated
    assert relayed["node"] == "b" and relayed["reason"] == "spraying"
    row = store.get_ban("192.0.2.3", now=1001)
    assert change_from_row(row, "a")["node"] == "b"
    assert split_origin("consecutive-failures", "a") == ("a", "consecutive-failures")


def test_merge_rules():
    assert supersedes(ban("x", 10, 200), ban("x", 5, 100))  # longer wins
    assert not supersedes(ban("x", 20, 100), ban("x", 5, 200))  # a ban never shortens a ban
    assert supersedes(unban("x", 10), ban("x", 10, 100))  # unban lifts a ban made before it
    assert not supersedes(unban("x", 9), ban("x", 10, 100))  # ...not one made after it
    assert supersedes(ban("x", 11, 100), unban("x", 10))  # banned again after the unban
    assert not supersedes(ban("x", 10, 100), unban("x", 10))  # stale replay of the old ban
    assert not supersedes(unban("x", 10), unban("x", 10))


def test_valid_change_canonicalises_and_rejects_junk():
    change = valid_change({**ban("2001:DB8::0001", 1.5, 99), "reason": "r" * 999 + "\x1b[2J",
                           "failures": 7.0, "node": "n\n1", "extra": [1] * 99})
    assert change["ip"] == "2001:db8::1" and change["reason"] == "r" * 256
    assert change["failures"] == 7 and change["node"] == "n?1" and "extra" not in change
    assert valid_change({**ban("::ffff:192.0.2.1", 1, 2), "reason": "a\x1b[2Jb"}) == {
        **ban("192.0.2.1", 1.0, 2.0), "reason": "a?[2Jb"}
    for junk in (None, [], {"op": "ban"}, {**ban("x", 1, 2)}, {**ban("192.0.2.1", 1, 2),
                                                               "op": "drop"},
                 {**ban("192.0.2.1", 1, 2), "until": "nan"}):
        assert valid_change(junk) is None


NOW = 1_700_000_000.0


@pytest.mark.parametrize(("field", "value", "why"), [
    ("failures", 10**23, "failures"), ("failures", -1, "failures"), ("failures", "6", "failures"),
    ("failures", 1.5, "failures"), ("failures", True, "failures"), ("failures", [6], "failures"),
    ("failures", float("inf"), "failures"), ("failures", 1e300, "failures"),
    ("ts", float("nan"), "ts"), ("ts", float("inf"), "ts"), ("ts", -1, "ts"),
    ("ts", NOW + 3600, "ts"), ("ts", 10**400, "ts"), ("ts", "1700000000", "ts"), ("ts", None, "ts"),
    ("until", NOW + 10 * 365 * 86400, "until"), ("until", -5, "until"), ("until", True, "until"),
    ("ip", "0.0.0.0", "unspecified"), ("ip", "::", "unspecified"), ("ip", "224.0.0.9", "multicast"),
    ("ip", "127.0.0.1", "loopback"), ("ip", "::ffff:0.0.0.0", "unspecified"),
    ("ip", "fe80::1%eth0", "scoped"), ("ip", "1.2.3.4/32", "not an IP"), ("ip", 3232235777, "not"),
    ("ip", "1" * 100000, "not an IP"), ("kind", "lockdown", "kind"), ("kind", ["ban"], "kind"),
    ("reason", 5, "reason"), ("aor", {"a": 1}, "aor"), ("node", 1.5, "node"),
    ("op", ["ban"], "op"),
])
def test_check_change_bounds_every_field(field, value, why):
    from floodguard.fleet import BadEntry, check_change

    good = ban("192.0.2.1", NOW - 10, NOW + 170)
    assert check_change(good, NOW)["failures"] == 6
    with pytest.raises(BadEntry, match=why) as info:
        check_change({**good, field: value}, NOW)
    assert len(str(info.value)) < 200


def test_applier_skips_a_row_sqlite_refuses_and_keeps_the_rest(tmp_path):
    store, sets = Store(tmp_path / "s.db"), KernelSets()
    applier = Applier(Config(), store, sets, writer_factory=KernelSets.writer)
    # not checked (check_change would refuse it): the store layer must still hold
    result = applier.apply([ban("192.0.2.1", 1000, 1180), ban("192.0.2.2", 1000, 1180,
                                                                failures=10**23),
                            ban("192.0.2.3", 1000, 1180)], now=1001)
    assert result.bans == ["192.0.2.1", "192.0.2.3"] and result.errors == 1
    assert ("ban", "192.0.2.2") not in sets.entries and store.get_ban("192.0.2.2", 1001) is None
    assert store.get_ban("192.0.2.3", now=1001).failures == 6


def test_allow_list_agrees_with_bans_allowed_by():
    cfg = loads('[blacklist]\nallow = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32"]\n')
    allow = AllowList(cfg.blacklist.allow)
    for ip in ("10.1.2.3", "11.0.0.1", "2001:db8::5", "2001:db9::5", "192.0.2.7", "192.0.2.8"):
        assert allow.covering(ip) == allowed_by(cfg, ip)


# ---------------------------------------------------------------- applying to this node


def test_applier_bans_unbans_and_known_with_merge_rules(tmp_path):
    cfg = loads('[blacklist]\nallow = ["127.0.0.0/8", "192.0.2.7/32"]\n')
    store, sets = Store(tmp_path / "s.db"), KernelSets()
    applier = Applier(cfg, store, sets, writer_factory=KernelSets.writer)
    result = applier.apply([ban("192.0.2.1", 1000, 1180), ban("192.0.2.7", 1000, 1180),
                            ban("192.0.2.9", 900, 999),  # already expired
                            {"op": "known", "ip": "192.0.2.2", "ts": 1000, "until": 1600,
                             "node": "a"}], now=1001)
    assert result.bans == ["192.0.2.1"] and result.known == 1 and result.skipped == 1
    assert result.allowed == [("192.0.2.7", "192.0.2.7/32", "a")]
    assert sets.entries == {("ban", "192.0.2.1"): 179, ("known", "192.0.2.2"): 599}
    row = store.get_ban("192.0.2.1", now=1001)
    assert row.reason == "fleet:a:consecutive-failures" and row.created == 1000
    assert row.until == 1180 and row.kind == "suspend" and row.aor == "1001@x"
    assert store.active_known(now=1001)[0][0] == "192.0.2.2"
    # nothing applied from the fleet is journalled (it would echo back)
    assert store.journal_after(0) == []
    # the same ban again, or a shorter one, changes nothing; a longer one extends it
    assert applier.apply([ban("192.0.2.1", 1001, 1100)], now=1002).skipped == 1
    assert applier.apply([ban("192.0.2.1", 1002, 2000)], now=1002).bans == ["192.0.2.1"]
    # an unban older than the ban here is ignored; a newer one lifts it everywhere here
    assert applier.apply([unban("192.0.2.1", 1001.5)], now=1003).unbans == []
    assert applier.apply([unban("192.0.2.1", 1003)], now=1003).unbans == ["192.0.2.1"]
    assert ("ban", "192.0.2.1") not in sets.entries and store.get_ban("192.0.2.1", 1003) is None
    # the workers' engines follow every change
    assert [c.op for c in store.take_commands(0)] == ["ban", "ban", "unban"]
    # within one batch the merge rules pick the winner per address
    result = applier.apply([ban("192.0.2.3", 1000, 1500), unban("192.0.2.3", 1001),
                            ban("192.0.2.4", 1000, 1500), ban("192.0.2.4", 1001, 1400)],
                           now=1002)
    assert result.bans == ["192.0.2.4"] and store.get_ban("192.0.2.4", 1002).until == 1500


def test_applier_monitor_mode_and_full_set(tmp_path):
    store = Store(tmp_path / "s.db")
    monitor = Applier(loads('[guard]\nmode = "monitor"\n'), store, KernelSets(),
                      writer_factory=KernelSets.writer)
    assert monitor.apply([ban("192.0.2.1", 1000, 1180)], now=1001).monitor == 1
    assert store.get_ban("192.0.2.1", now=1001) is None
    full = Applier(Config(), store, KernelSets(maxelem=1), writer_factory=KernelSets.writer)
    result = full.apply([ban("192.0.2.1", 1000, 1180), ban("192.0.2.2", 1000, 1180)], now=1001)
    # the store keeps both (as the guard does): a restart retries the kernel
    assert result.full == 1 and store.get_ban("192.0.2.2", now=1001) is not None


def test_reload_lifts_fleet_bans_the_new_allow_list_covers(tmp_path):
    store, sets = Store(tmp_path / "s.db"), KernelSets()
    applier = Applier(Config(), store, sets, writer_factory=KernelSets.writer)
    applier.apply([ban("192.0.2.1", 1000, 9e9), ban("192.0.2.2", 1000, 9e9)])
    store.put_ban("192.0.2.3", "manual", "manual", 600)  # this node's own: the guard's business
    lifted = applier.reload(loads('[blacklist]\nallow = ["192.0.2.0/30"]\n'))
    assert lifted == ["192.0.2.1", "192.0.2.2"]
    assert store.get_ban("192.0.2.3") is not None and ("ban", "192.0.2.1") not in sets.entries


def test_applier_counts_what_the_kernel_refused_and_keeps_whole_second_timeouts(tmp_path):
    sets = KernelSets(maxelem=2)
    applier = Applier(Config(), Store(tmp_path / "s.db"), sets, writer_factory=KernelSets.writer)
    result = applier.apply([ban("192.0.2.1", 1000, 1010.2), ban("192.0.2.2", 1000, 1000.6),
                            ban("192.0.2.3", 1000, 1005), ban("192.0.2.4", 1000, 1005)],
                           now=1000)
    assert result.full == 2 and result.errors == 0
    # timeouts are whole seconds, at least 1 (0 would mean forever in an ipset)
    assert sets.entries == {("ban", "192.0.2.1"): 11, ("ban", "192.0.2.2"): 1}


def test_netlink_writer_falls_back_to_the_set_manager(monkeypatch):
    from floodguard.kernel import KernelError, ipset_netlink
    from floodguard.kernel.ipset import SetManager
    from floodguard.kernel.rules import render

    sets = SetManager(render(Config()).sets)

    def refused(specs):
        raise KernelError("no netlink here")

    monkeypatch.setattr(ipset_netlink, "NetlinkSetWriter", refused)
    assert netlink_writer(sets) is sets
    writer = KernelWriter(sets)  # the default writer factory
    assert writer.writer is sets
    writer.close()  # leaves the set manager to its owner


def test_applier_in_monitor_mode_says_what_it_would_ban_and_changes_nothing(tmp_path):
    import io
    import json

    from floodguard.events import EventLog

    store, sets, out = Store(tmp_path / "s.db"), KernelSets(), io.StringIO()
    store.put_ban("192.0.2.9", "manual", "manual", 600, now=1000)
    applier = Applier(loads('[guard]\nmode = "monitor"\n'), store, sets,
                      writer_factory=KernelSets.writer, events=EventLog(out, json_mode=True))
    result = applier.apply([ban("192.0.2.1", 1000, 1180), unban("192.0.2.9", 1001),
                            {"op": "known", "ip": "192.0.2.5", "ts": 1000, "until": 9e9,
                             "node": "a"}], now=1001)
    assert result.monitor == 3 and result.bans == result.unbans == [] and result.known == 0
    assert sets.list("ban") == [] and sets.list("known") == []
    assert store.get_ban("192.0.2.1", now=1001) is None
    assert store.get_ban("192.0.2.9", now=1001) is not None  # the fleet's unban: not here
    assert store.take_commands(0) == []
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["event"], e["ip"], e["by"], e["seconds"]) for e in events] == [
        ("would_suspend", "192.0.2.1", "fleet", 179)]
