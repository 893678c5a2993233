"""`floodguard explain`: what it says about a source and an account, from a real store, the
policy engine's own snapshot and hashlimit table lines in the kernel's format (the kernel's
own tables are read in tests/integration/test_kernel_traffic.py and test_guard_kamailio.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from floodguard import explain
from floodguard.cli import main
from floodguard.config import BlacklistConfig, Config, GatewayConfig, StateConfig
from floodguard.explain import explain_account, explain_source, render
from floodguard.kernel import hashlimit
from floodguard.policy import Ban, Engine
from floodguard.store import HOLD_ACCOUNT, Store

GUESSER, PHONE, V6 = "192.0.2.7", "192.0.2.8", "2001:db8:1:2::5"
WALL = 1_700_000_000.0


@pytest.fixture
def env(tmp_path: Path):
    cfg = replace(Config(), state=StateConfig(path=str(tmp_path / "state.db")),
                  gateways=(GatewayConfig(name="carrier", sources=("198.51.100.0/24",)),))
    store = Store(cfg.state.path)
    yield cfg, store
    store.close()


def fail(engine: Engine, store: Store, src: str, aor: str, times: int, mono: float) -> None:
    """Proven failures through the engine; its bans recorded as the guard records them."""
    for i in range(times):
        for action in engine.report(mono + i, src, aor, False):
            if isinstance(action, Ban):
                store.put_ban(action.ip, action.kind, action.reason, action.seconds,
                              aor=action.aor, failures=action.failures, now=WALL)


def save(engine: Engine, store: Store, mono: float, name: str = "engine-q0") -> None:
    store.save_snapshot(name, engine.export_state(mono), now=WALL)


def test_a_source_with_failures_counts_them_per_account(env) -> None:
    cfg, store = env
    engine = Engine(cfg)
    fail(engine, store, GUESSER, "alice@example.com", 4, 100.0)
    save(engine, store, 104.0)
    report = explain_source(cfg, store, GUESSER, now=WALL + 1)
    assert report["ban"] is None
    assert report["guard"]["failures"] == 4
    assert report["guard"]["accounts"] == [{"aor": "alice@example.com", "failures": 4, "of": 6}]
    assert report["verdict"] == "can register; 4 of 6 consecutive failures before a suspension"
    assert "alice@example.com: 4/6 failures" in render(report)
    # the snapshot's counters expire: read much later, nothing is left
    later = explain_source(cfg, store, GUESSER, now=WALL + 10_000)
    assert later["guard"]["failures"] is None and later["guard"]["accounts"] == []


def test_a_suspended_source_shows_the_suspension_and_its_history(env) -> None:
    cfg, store = env
    engine = Engine(cfg)
    fail(engine, store, GUESSER, "alice@example.com", 6, 100.0)
    save(engine, store, 106.0)
    report = explain_source(cfg, store, GUESSER, now=WALL + 10,
                            set_test=lambda kind, ip: kind == "ban" and ip == GUESSER)
    assert report["ban"]["kind"] == "suspend" and report["ban"]["aor"] == "alice@example.com"
    assert report["in_kernel_ban_set"] is True
    assert report["verdict"].startswith("suspended for 17")  # 180 s from WALL, read at +10
    assert [(h["op"], h["kind"], h["ended"]) for h in report["history"]] == [
        ("ban", "suspend", False)]
    assert report["guard"]["suspensions_in_window"] == 1
    # long after, the suspension is history: over, but still told
    store.prune(now=WALL + 1000)
    over = explain_source(cfg, store, GUESSER, now=WALL + 1000)
    assert over["ban"] is None and over["history"][0]["ended"] is True
    assert "(ended)" in render(over)


def test_an_account_lists_the_sources_failing_on_it_and_its_bans(env) -> None:
    cfg, store = env
    engine = Engine(cfg)
    fail(engine, store, GUESSER, "alice@example.com", 6, 100.0)
    fail(engine, store, PHONE, "Alice@Example.com", 2, 200.0)
    fail(engine, store, "192.0.2.9", "bob@example.com", 3, 300.0)
    save(engine, store, 303.0)
    report = explain_account(cfg, store, "alice", now=WALL + 5)
    assert [s["source"] for s in report["failing_sources"]] == [PHONE]  # the guesser's count
    assert report["failing_sources"][0]["failures"] == 2                # reset at its ban
    assert [b["ip"] for b in report["bans"]] == [GUESSER]
    assert [h["op"] for h in report["history"]] == ["ban"]
    assert explain_account(cfg, store, "ALICE@example.com", now=WALL + 5)["bans"]
    assert not explain_account(cfg, store, "alice@other.example", now=WALL + 5)["bans"]
    store.put_hold(HOLD_ACCOUNT, "alice@example.com", "distributed-guessing", 180, count=5,
                   now=WALL)
    protected = explain_account(cfg, store, "alice", now=WALL + 5)
    assert [p["sources"] for p in protected["protections"]] == [5]
    assert protected["verdict"].startswith("protected for 175 s more")
    assert "protected: alice@example.com, 5 failing sources" in render(protected)
    nobody = explain_account(cfg, store, "carol", now=WALL + 5)
    assert nobody["verdict"] == "nothing stops this account" and not nobody["history"]
    with pytest.raises(ValueError):
        explain_account(cfg, store, "a b", now=WALL)


def test_an_ipv6_source_is_explained_by_its_prefix(env) -> None:
    cfg, store = env
    engine = Engine(cfg)
    fail(engine, store, "2001:db8:1:2::", "alice@example.com", 3, 100.0)
    save(engine, store, 103.0)
    report = explain_source(cfg, store, V6, now=WALL + 1)
    assert report["key"] == "2001:db8:1:2::" and report["guard"]["failures"] == 3
    assert "counted as 2001:db8:1:2::" in render(report)


def test_allow_list_gateway_and_known_good(env) -> None:
    cfg, store = env
    cfg = replace(cfg, blacklist=BlacklistConfig(allow=("192.0.2.0/28",)))
    assert explain_source(cfg, store, GUESSER, now=WALL)["verdict"].startswith(
        "allow-listed (192.0.2.0/28)")
    gw = explain_source(cfg, store, "198.51.100.9", now=WALL)
    assert gw["gateways"] == ["carrier"] and gw["allow"] is None
    store.put_known("198.51.100.9", 600, now=WALL)
    assert explain_source(cfg, store, "198.51.100.9", now=WALL + 100)["known_good"][
        "remaining"] == 500


def test_kernel_buckets_decide_the_verdict(env) -> None:
    cfg, store = env
    limited = {"table": "fg-reg-1", "purpose": hashlimit.PURPOSES["reg"], "source": PHONE,
               "limited": True, "shared": False, "credit": 0, "credit_cap": 10, "cost": 5}
    gateway = {**limited, "purpose": hashlimit.PURPOSES["gwy"], "source": "0.0.0.0",
               "shared": True}
    report = explain_source(cfg, store, PHONE, now=WALL,
                            buckets=lambda ip, prefix: [limited, gateway])
    assert report["verdict"] == "the kernel's rate limits drop it right now: REGISTER per source"
    assert report["kernel_limits"] == [limited]  # a gateway group's bucket: not a member
    assert "DROPPING" in render(report)


def test_hashlimit_lines_in_the_kernel_format(tmp_path: Path) -> None:
    # dl_seq_real_show: "%ld %pI4:%u->%pI4:%u %llu %llu %llu" (%pI6: 8 groups of 4 digits)
    v4 = tmp_path / "ipt_hashlimit"
    v6 = tmp_path / "ip6t_hashlimit"
    v4.mkdir()
    v6.mkdir()
    (v4 / "fg-reg-abc").write_text(f"9 {PHONE}:0->0.0.0.0:0 0 3200 320\n"
                                   "3 192.0.2.99:0->0.0.0.0:0 3200 3200 320\n")
    (v4 / "fg-bud-abc").write_text("5 0.0.0.0:0->0.0.0.0:0 900 1000 1\n")
    (v4 / "other-table").write_text(f"9 {PHONE}:0->0.0.0.0:0 0 3200 320\n")
    (v6 / "fg-sip-abc").write_text(
        "7 2001:0db8:0001:0002:0000:0000:0000:0000:0->0000:0000:0000:0000:0000:0000:0000:0000:0"
        " 100 3200 320\nnot a bucket\n")
    found = hashlimit.buckets_of(PHONE, proc=tmp_path)
    assert [(b.table, b.limited, b.shared) for b in found] == [
        ("fg-bud-abc", False, True), ("fg-reg-abc", True, False)]
    assert found[1].purpose == "REGISTER per source"
    six = hashlimit.buckets_of(V6, 64, proc=tmp_path)
    assert [(b.source, b.limited) for b in six] == [("2001:db8:1:2::", True)]
    assert hashlimit.buckets_of("::ffff:192.0.2.99", proc=tmp_path)[1].credit == 3200
    assert hashlimit.buckets_of("203.0.113.1", proc=tmp_path / "missing") == []
    assert hashlimit.parse_line("t", 4, "x y z") is None


def test_cli_json_and_refusal(env, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, store = env
    # the kernel is read in the integration tests, in their own namespaces
    monkeypatch.setattr(explain, "_kernel_readers", lambda cfg: (None, None))
    config = Path(cfg.state.path).with_name("floodguard.toml")
    config.write_text(f'[state]\npath = "{cfg.state.path}"\n', encoding="utf-8")
    store.put_ban(GUESSER, "blacklist", "spraying", 3600, aor="alice@example.com", failures=5)
    out = CliRunner().invoke(main, ["explain", GUESSER, "--json", "-c", str(config)])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["ban"]["reason"] == "spraying" and data["type"] == "source"
    account = CliRunner().invoke(main, ["explain", "alice@example.com", "-c", str(config)])
    assert account.exit_code == 0 and GUESSER in account.stdout
    bad = CliRunner().invoke(main, ["explain", "not an account", "-c", str(config)])
    assert bad.exit_code == 4 and "user[@domain]" in bad.output


def test_a_shared_address_with_a_suspended_endpoint(env) -> None:
    """Known-good pairs make the address shared-capable; a stale phone's failures suspend its
    account from that address only (issue #16 items 1-2), and explain says so both ways."""
    cfg, store = env
    nat = "203.0.113.10"
    store.put_known_pairs([(nat, "1001@pbx", WALL + 3000), (nat, "1002@pbx", WALL + 7000),
                           (PHONE, "1009@pbx", WALL - 1)])
    store.put_pair_ban(nat, "1010@pbx", "consecutive-failures", 180, failures=6, level=2,
                       now=WALL - 30)
    store.put_pair_ban(nat, "1011@pbx", "consecutive-failures", 180, failures=6, now=WALL - 400)
    report = explain_source(cfg, store, nat, now=WALL)
    assert report["shared_capable"] is True and report["ban"] is None
    assert report["known_pairs"] == [{"aor": "1001@pbx", "remaining": 3000.0},
                                     {"aor": "1002@pbx", "remaining": 7000.0}]
    (endpoint,) = report["endpoint_suspensions"]
    assert (endpoint["aor"], endpoint["remaining"], endpoint["level"], endpoint["scope"]) == (
        "1010@pbx", 150.0, 2, "aor")
    assert report["verdict"] == ("can register, except 1010@pbx (endpoint suspended; the other "
                                 "accounts from this address pass)")
    ended = [h for h in report["history"] if h.get("scope") == "aor"]
    assert [(h["aor"], h["ended"]) for h in ended] == [("1011@pbx", True)]
    text = render(report)
    assert "known-good accounts: 2 (1001@pbx, 1002@pbx); shared-capable" in text
    assert "endpoint: 1010@pbx from 203.0.113.10 is suspended" in text
    # an expired pair does not count; a gateway member is shared-capable from the start
    lone = explain_source(cfg, store, PHONE, now=WALL)
    assert lone["known_pairs"] == [] and lone["shared_capable"] is False
    assert explain_source(cfg, store, "198.51.100.9", now=WALL)["shared_capable"] is True
    # the account: where it is known-good, where it is suspended, its ended suspensions
    stale = explain_account(cfg, store, "1010", now=WALL)
    assert [(e["ip"], e["aor"]) for e in stale["endpoint_suspensions"]] == [(nat, "1010@pbx")]
    assert stale["verdict"].startswith(f"suspended from {nat} (endpoint suspension)")
    good = explain_account(cfg, store, "1001@PBX", now=WALL)
    assert [(p["source"], p["aor"]) for p in good["known_pairs"]] == [(nat, "1001@pbx")]
    assert good["endpoint_suspensions"] == []
    other = explain_account(cfg, store, "1011", now=WALL)
    assert [(h["ip"], h["ended"]) for h in other["history"]] == [(nat, True)]
    assert f"1011@pbx from {nat}" in render(other)
