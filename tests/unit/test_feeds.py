"""Community blocklist parsing and import (kernel sets in memory, real store)."""

import http.server
import threading

import pytest

from floodguard.config import loads
from floodguard.feeds import FeedError, fetch, import_feed, parse
from floodguard.store import Store
from tests.kernelfake import KernelSets

FEED = """# APIBAN-style list
192.0.2.1
192.0.2.1
2001:db8::0001
198.51.100.7,seen scanning
127.0.0.5
not-an-ip
203.0.113.0/24
"""


def test_parse_dedupes_canonicalises_and_counts_junk():
    listed = parse(FEED)
    assert listed.addresses == ["192.0.2.1", "2001:db8::1", "198.51.100.7"]
    assert listed.skipped.count == 3  # loopback, junk, a network
    assert listed.skipped.examples[0] == "line 6: '127.0.0.5' is a loopback address"
    assert listed.skipped.examples[1] == "line 7: not an IP address: 'not-an-ip'"


BAD_LINES = [
    "0.0.0.0", "::", "0:0::0", "224.0.0.1", "ff02::1", "127.0.0.1", "::1", "255.255.255.255",
    "::ffff:0.0.0.0", "::ffff:127.0.0.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "fe80::1%eth0",
    "10.0.0.0/8", "x" * 5000, "1.2.3.4" + " " * 600, "\x00", "1.2.3.4\x00",
]


def test_each_bad_line_is_skipped_alone_and_the_rest_imported(tmp_path):
    good = ["192.0.2.10", "2001:db8::10", "::ffff:198.51.100.10"]
    lines = [x for pair in zip(BAD_LINES, good * 7, strict=False) for x in pair]
    listed = parse("\n".join(lines))
    assert listed.addresses == ["192.0.2.10", "2001:db8::10", "198.51.100.10"]
    assert listed.skipped.count == len(BAD_LINES)
    assert len(listed.skipped.examples) == 5
    assert "line 1: '0.0.0.0' is the unspecified address" in listed.skipped.examples
    assert all(len(e) < 200 for e in listed.skipped.examples)


def test_import_bans_listed_addresses_but_never_allow_listed(tmp_path, kernel_sets):
    path = tmp_path / "list.txt"
    path.write_text(FEED + "::ffff:10.9.9.9\n")
    cfg = loads(f'[[feed]]\nname = "apiban"\nsource = "{path}"\nban_time = 600\n'
                '[blacklist]\nallow = ["::ffff:10.9.9.0/120"]\n')
    store, sets = Store(tmp_path / "s.db"), kernel_sets
    result = import_feed(cfg, cfg.feeds[0], store, sets, now=1000)
    assert result.banned == ["192.0.2.1", "2001:db8::", "198.51.100.7"]
    # a mapped address is IPv4, and so is a mapped allow-list network
    assert result.allowed == ["10.9.9.9"] and result.skipped.count == 3
    assert sets.list("ban") == [("192.0.2.1", 600), ("198.51.100.7", 600),
                                ("2001:db8::/64", 600)]
    assert not sets.test("ban", "10.9.9.9")
    # an IPv6 source is kept as its /64, like the guard's and the operator's bans
    assert store.get_ban("2001:db8::1", now=1001) is None
    row = store.get_ban("2001:db8::", now=1001)
    assert row.reason == "feed:apiban" and row.until == 1600
    # a longer ban already in place is kept
    store.put_ban("198.51.100.7", "blacklist", "spraying", 86400, now=1000)
    again = import_feed(cfg, cfg.feeds[0], store, KernelSets(), now=1100)
    assert "198.51.100.7" not in again.banned
    assert store.get_ban("198.51.100.7", now=1100).reason == "spraying"


def test_the_runtime_allow_list_wins_over_a_feed(tmp_path, kernel_sets):
    path = tmp_path / "list.txt"
    path.write_text("192.0.2.1\n192.0.2.2\n")
    cfg = loads(f'[[feed]]\nname = "apiban"\nsource = "{path}"\nban_time = 600\n')
    store = Store(tmp_path / "s.db")
    store.put_allow("192.0.2.1/32", "office", None)  # floodguard allow add 192.0.2.1
    result = import_feed(cfg, cfg.feeds[0], store, kernel_sets, now=1000)
    assert result.banned == ["192.0.2.2"] and result.allowed == ["192.0.2.1"]


def test_an_address_the_kernel_refuses_is_skipped_not_fatal(tmp_path):
    from floodguard.kernel import KernelError

    path = tmp_path / "list.txt"
    path.write_text("192.0.2.1\n192.0.2.2\n192.0.2.3\n")
    cfg = loads(f'[[feed]]\nname = "f"\nsource = "{path}"\n')
    sets = KernelSets(refuse={
        "192.0.2.2": KernelError("ipset add floodguard-ban 192.0.2.2: refused")})
    store = Store(tmp_path / "s.db")
    result = import_feed(cfg, cfg.feeds[0], store, sets, now=1000)
    assert result.banned == ["192.0.2.1", "192.0.2.3"]
    assert result.skipped.count == 1 and "refused" in result.skipped.examples[0]
    # kept in the store as every ban path keeps it: the guard's restore and apply retry it
    assert store.get_ban("192.0.2.2", now=1000) is not None
    assert sets.addresses("ban") == {"192.0.2.1", "192.0.2.3"}


def test_scheduler_event_counts_skipped_lines(tmp_path, kernel_sets):
    import io
    import json

    from floodguard.events import EventLog
    from floodguard.feeds import FeedScheduler

    path = tmp_path / "list.txt"
    path.write_text("0.0.0.0\n192.0.2.1\n224.0.0.5\n192.0.2.2\n")
    cfg = loads(f'[state]\npath = "{tmp_path / "s.db"}"\n'
                f'[[feed]]\nname = "f"\nsource = "{path}"\n')
    log, sets = io.StringIO(), kernel_sets
    FeedScheduler(cfg, EventLog(log, json_mode=True), lambda: Store(tmp_path / "s.db"),
                  lambda: sets).check()
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["ban", "ban", "feed_imported"]
    assert [e["by"] for e in events[:2]] == ["feed", "feed"]
    events = events[2:]
    assert events[0]["banned"] == 2 and events[0]["skipped"] == 2
    assert events[0]["skipped_examples"] == ["line 1: '0.0.0.0' is the unspecified address",
                                             "line 3: '224.0.0.5' is a multicast address"]
    assert sets.addresses("ban") == {"192.0.2.1", "192.0.2.2"}
    assert sets.closed  # the scheduler closes the sets it opened


def test_fetch_over_http_and_errors(tmp_path):
    (tmp_path / "list.txt").write_text("192.0.2.9\n")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(tmp_path), **k)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/list.txt"
        assert fetch(url) == "192.0.2.9\n"
        with pytest.raises(FeedError):
            fetch(url.replace("list.txt", "missing.txt"))
    finally:
        server.shutdown()
    with pytest.raises(FeedError):
        fetch(str(tmp_path / "nope.txt"))


def test_feed_config_validation():
    from floodguard.config import ConfigError
    with pytest.raises(ConfigError) as info:
        loads('[[feed]]\nname = "a"\nsource = "x"\ninterval = 0\n[[feed]]\nname = "a"\n'
              'source = "y"\n')
    assert info.value.errors[0] == "feed[0].interval: must be an integer >= 1, got 0"
    assert 'feed: name "a" is used more than once' in info.value.errors


def test_monitor_mode_bans_nothing_and_says_what_it_would_ban(tmp_path, kernel_sets):
    import io
    import json

    from floodguard.enforce import EVENT_EACH
    from floodguard.events import EventLog

    path = tmp_path / "list.txt"
    path.write_text("192.0.2.1\n198.51.100.7\n10.9.9.9\n")
    cfg = loads(f'[[feed]]\nname = "apiban"\nsource = "{path}"\nban_time = 600\n'
                '[guard]\nmode = "monitor"\n[blacklist]\nallow = ["10.9.9.0/24"]\n')
    store, out = Store(tmp_path / "s.db"), io.StringIO()
    result = import_feed(cfg, cfg.feeds[0], store, kernel_sets, now=1000,
                         events=EventLog(out, json_mode=True))
    assert result.banned == [] and result.would_ban == ["192.0.2.1", "198.51.100.7"]
    assert result.allowed == ["10.9.9.9"]
    assert kernel_sets.list("ban") == [] and store.active_bans(now=1000) == []
    assert store.journal_after(0) == []  # nothing for the fleet either
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["event"], e["ip"], e["by"], e["reason"], e["seconds"]) for e in events] == [
        ("would_ban", "192.0.2.1", "feed", "feed:apiban", 600),
        ("would_ban", "198.51.100.7", "feed", "feed:apiban", 600)]
    # a long list is one summary event
    path.write_text("".join(f"192.0.2.{i}\n" for i in range(1, EVENT_EACH + 2)))
    out.truncate(0)
    out.seek(0)
    result = import_feed(cfg, cfg.feeds[0], store, kernel_sets, now=1000,
                         events=EventLog(out, json_mode=True))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(result.would_ban) == EVENT_EACH + 1 and kernel_sets.list("ban") == []
    assert [(e["event"], e["count"], e["by"]) for e in events] == [
        ("would_bans", EVENT_EACH + 1, "feed")]


def test_an_ipv6_feed_ban_is_one_per_64_and_the_operator_lifts_it(tmp_path, kernel_sets):
    """Two listed addresses in one /64 are one ban keyed as the guard keys the source, and
    `blacklist remove` of either listed address lifts it from the store and the kernel."""
    from floodguard.bans import BanBook

    path = tmp_path / "list.txt"
    path.write_text("2001:db8:1:2::a\n2001:db8:1:2:ffff::b\n2001:db8:9::1\n")
    cfg = loads(f'[[feed]]\nname = "f"\nsource = "{path}"\nban_time = 600\n')
    store = Store(tmp_path / "s.db")
    result = import_feed(cfg, cfg.feeds[0], store, kernel_sets, now=1000)
    assert result.banned == ["2001:db8:1:2::", "2001:db8:9::"]
    assert BanBook(cfg, store, kernel_sets, forget=lambda ips: None).remove("2001:db8:1:2:ffff::b")
    assert [row.ip for row in store.active_bans(now=1001)] == ["2001:db8:9::"]
    assert [net for net, _ in kernel_sets.list("ban")] == ["2001:db8:9::/64"]
