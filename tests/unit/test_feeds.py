"""Community blocklist parsing and import (kernel set recorded, real store)."""

import http.server
import threading

import pytest

from floodguard.config import loads
from floodguard.feeds import FeedError, fetch, import_feed, parse
from floodguard.store import Store

FEED = """# APIBAN-style list
192.0.2.1
192.0.2.1
2001:db8::0001
198.51.100.7,seen scanning
127.0.0.5
not-an-ip
203.0.113.0/24
"""


class Sets:
    def __init__(self):
        self.added = {}

    def add(self, kind, ip, timeout=None):
        self.added[ip] = (kind, timeout)

    def close(self):
        pass


def test_parse_dedupes_canonicalises_and_counts_junk():
    addresses, invalid = parse(FEED)
    assert addresses == ["192.0.2.1", "2001:db8::1", "198.51.100.7", "127.0.0.5"]
    assert invalid == 2


def test_import_bans_listed_addresses_but_never_allow_listed(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text(FEED)
    cfg = loads(f'[[feed]]\nname = "apiban"\nsource = "{path}"\nban_time = 600\n')
    store, sets = Store(tmp_path / "s.db"), Sets()
    result = import_feed(cfg, cfg.feeds[0], store, sets, now=1000)
    assert result.banned == ["192.0.2.1", "2001:db8::1", "198.51.100.7"]
    assert result.allowed == ["127.0.0.5"] and result.invalid == 2
    assert sets.added["192.0.2.1"] == ("ban", 600)
    row = store.get_ban("2001:db8::1", now=1001)
    assert row.reason == "feed:apiban" and row.until == 1600
    # a longer ban already in place is kept
    store.put_ban("198.51.100.7", "blacklist", "spraying", 86400, now=1000)
    again = import_feed(cfg, cfg.feeds[0], store, Sets(), now=1100)
    assert "198.51.100.7" not in again.banned
    assert store.get_ban("198.51.100.7", now=1100).reason == "spraying"


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
