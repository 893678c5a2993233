"""The CLI and bans.py read addresses through floodguard.addr: ``::ffff:a.b.c.d`` is IPv4, bad
input is a usage error (exit 2) before anything else happens."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from floodguard.bans import BanBook, BanError, allowed_by
from floodguard.cli import main
from floodguard.config import loads
from floodguard.store import HOLD_ACCOUNT, HOLD_LOCKDOWN, Store

ALLOW = '[blacklist]\nallow = ["127.0.0.0/8", "::ffff:10.0.0.1/128", "2001:db8::/32"]\n'


@pytest.mark.parametrize(("ip", "want"), [
    ("10.0.0.1", "::ffff:a00:1/128"), ("::ffff:10.0.0.1", "::ffff:a00:1/128"),
    ("::ffff:127.0.0.9", "127.0.0.0/8"), ("2001:DB8::5", "2001:db8::/32"), ("10.0.0.2", None),
])
def test_allowed_by_reads_mapped_addresses_and_networks_as_ipv4(ip, want):
    assert allowed_by(loads(ALLOW), ip) == want


def test_ban_book_canonicalises_and_refuses_what_cannot_be_banned(tmp_path):
    book = BanBook(loads(ALLOW), Store(tmp_path / "s.db"), None)
    assert book.add("::ffff:192.0.2.1", 60, "r").ip == "192.0.2.1"
    assert book.explain("::FFFF:192.0.2.1").startswith("192.0.2.1 is banned")
    assert book.remove("::ffff:192.0.2.1") and book.store.get_ban("192.0.2.1") is None
    for bad, why in (("::ffff:10.0.0.1", "allow list"), ("0.0.0.0", "unspecified"),
                     ("ff02::1", "multicast"), ("1.2.3", "not an IP address"),
                     ("fe80::1%eth0", "scoped")):
        with pytest.raises(BanError, match=why):
            book.add(bad, 60, "r")


@pytest.mark.parametrize("command", ["add", "remove", "explain"])
def test_cli_rejects_a_bad_address_with_exit_2(tmp_path, command):
    config = tmp_path / "f.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n')
    result = CliRunner().invoke(main, ["blacklist", command, "10.0.0.256", "-c", str(config)])
    assert result.exit_code == 2 and "not an IP address: '10.0.0.256'" in result.output
    assert not (tmp_path / "s.db").exists()  # refused before the store or the kernel


def test_cli_explain_answers_for_the_canonical_address(tmp_path):
    config = tmp_path / "f.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n' + ALLOW)
    result = CliRunner().invoke(main, ["blacklist", "explain", "::ffff:10.0.0.1", "-c",
                                       str(config)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("10.0.0.1 is in the allow list (::ffff:a00:1/128)")


def test_cli_lists_and_lifts_endpoint_suspensions(tmp_path, monkeypatch):
    import json

    from floodguard import cli_books

    config = tmp_path / "f.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "s.db"}"\n')
    store = Store(tmp_path / "s.db")
    store.put_pair_ban("203.0.113.10", "1010@pbx", "consecutive-failures", 180, failures=6)
    store.put_pair_ban("203.0.113.11", "1010@pbx", "consecutive-failures", 180, failures=6)
    monkeypatch.setattr(cli_books, "ban_book",
                        lambda cfg, need_kernel: BanBook(cfg, store, None))
    listed = CliRunner().invoke(main, ["blacklist", "list", "--json", "-c", str(config)])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["ip"], r["aor"], r["scope"], r["in_kernel"]) for r in rows] == [
        ("203.0.113.10", "1010@pbx", "aor", False), ("203.0.113.11", "1010@pbx", "aor", False)]
    text = CliRunner().invoke(main, ["blacklist", "list", "-c", str(config)]).stdout
    assert "endpoint" in text and "(1010@pbx only)" in text
    lifted = CliRunner().invoke(main, ["blacklist", "remove", "--aor", "1010", "--source",
                                       "203.0.113.11", "-c", str(config)])
    assert lifted.exit_code == 0 and lifted.stdout == "lifted 1010@pbx from 203.0.113.11\n"
    assert [r.ip for r in store.active_pair_bans()] == ["203.0.113.10"]
    assert [(c.op, c.ip, c.reason) for c in store.take_commands(0)] == [
        ("lift-pair", "203.0.113.11", "1010@pbx")]
    none = CliRunner().invoke(main, ["blacklist", "remove", "--aor", "1011", "-c", str(config)])
    assert none.stdout == "1011 has no endpoint suspension nor protection\n"
    # an account's protection (issue #16 item 4) is lifted by --aor without a source, and a
    # lockdown by the address
    store.put_hold(HOLD_ACCOUNT, "1012@pbx", "distributed-guessing", 180, count=5)
    store.put_hold(HOLD_LOCKDOWN, "203.0.113.12", "spraying", 3600, count=5)
    unprotected = CliRunner().invoke(main, ["blacklist", "remove", "--aor", "1012@pbx",
                                            "-c", str(config)])
    assert unprotected.stdout == "lifted 1012@pbx protection\n", unprotected.output
    assert store.active_holds(HOLD_ACCOUNT) == []
    assert ("unprotect", "1012@pbx") in [(c.op, c.ip) for c in store.take_commands(0)]
    unlocked = CliRunner().invoke(main, ["blacklist", "remove", "203.0.113.12",
                                         "-c", str(config)])
    assert unlocked.stdout == "removed 203.0.113.12\n", unlocked.output
    assert store.active_holds(HOLD_LOCKDOWN) == []
    usage = CliRunner().invoke(main, ["blacklist", "remove", "-c", str(config)])
    assert usage.exit_code == 2
