"""``floodguard explain IP|user[@domain]`` (issue #16 item 5, the parts items 1-2 made
possible): its JSON, from a real state database, engine snapshots and a fake /proc."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from floodguard.config import loads
from floodguard.explain import explain, explain_command, hashlimits
from floodguard.store import Store

NOW = 1_800_000_000.0
NAT, LONE = "203.0.113.10", "198.51.100.66"
CFG = loads('[[gateway]]\nname = "callcentre"\nsources = ["192.0.2.0/24"]\ncps = 50\n'
            '[blacklist]\nallow = ["127.0.0.0/8", "10.9.0.0/16"]\n')


def _state(path: Path) -> Store:
    store = Store(path)
    store.put_known(NAT, 7200, now=NOW - 10)
    store.put_known_pairs([(NAT, "1001@pbx", NOW + 3000), (NAT, "1002@pbx", NOW + 7000),
                           (LONE, "9@pbx", NOW - 1)])
    store.put_pair_ban(NAT, "1010@pbx", "consecutive-failures", 180, failures=6, level=2,
                       now=NOW - 30)
    store.put_pair_ban(NAT, "1011@pbx", "consecutive-failures", 180, failures=6, now=NOW - 400)
    store.put_ban(LONE, "suspend", "consecutive-failures", 180, aor="1001@pbx", failures=6,
                  now=NOW - 1000)
    store.put_ban(LONE, "blacklist", "repeat-offender", 3600, aor="1001@pbx", failures=6,
                  now=NOW - 60)  # replaces the row; the journal keeps both
    # the engine snapshot of one worker, saved 2 s ago
    store.save_snapshot("engine-q0", {"version": 1, "counters": {
        "source": [[LONE, 3, 100.0]],
        "aor": [[NAT, "1003@pbx", 4, 3000.0], [LONE, "1001@pbx", 3, 100.0],
                [NAT, "1004@pbx", 2, -5.0]]}}, now=NOW - 2)
    store.save_snapshot("counters-engine-q0", {"offenders": [[LONE, 42], [NAT, 3]]}, now=NOW)
    return store


def _proc(tmp: Path) -> Path:
    folder = tmp / "ipt_hashlimit"
    folder.mkdir()
    (folder / "fg-reg-0123abcd").write_text(
        f"9 {LONE}:0->0.0.0.0:0 0 320000 32000\n7 {NAT}:0->0.0.0.0:0 160000 320000 32000\n")
    (folder / "fg-sip-0123abcd").write_text(f"9 {NAT}:0->0.0.0.0:0 1000000 1000000 32000\n")
    (folder / "other").write_text(f"9 {LONE}:0->0.0.0.0:0 0 320000 32000\n")
    return tmp


def test_a_shared_address_with_a_suspended_endpoint(tmp_path: Path) -> None:
    store = _state(tmp_path / "state.db")
    data = explain(CFG, store, NAT, now=NOW, proc=_proc(tmp_path))
    assert data["type"] == "source" and data["source"] == NAT
    assert data["allow_listed"] is None and data["gateway"] is None
    assert data["known_good"] == {"remaining": 7190.0}
    assert data["shared_capable"] is True
    assert [p["aor"] for p in data["known_pairs"]] == ["1001@pbx", "1002@pbx"]
    assert data["failures"] == [{"aor": "1003@pbx", "count": 4, "limit": 6, "text": "4/6"}]
    (suspension,) = data["suspensions"]
    assert (suspension["aor"], suspension["remaining"], suspension["level"]) == (
        "1010@pbx", 150.0, 2)
    assert data["ban"] is None
    assert [(h["op"], h["aor"], h["ended"]) for h in data["history"]] == [
        ("suspend", "1011@pbx", True)]
    assert [(k["limit"], k["dropping"]) for k in data["kernel_limits"]] == [
        ("register", False), ("sip", False)]
    assert data["guard_drops"] == 3
    assert any("1010@pbx" in line and "suspended" in line for line in data["summary"])
    assert any("shared-capable" in line for line in data["summary"])


def test_a_lone_address_banned_and_rate_limited(tmp_path: Path) -> None:
    store = _state(tmp_path / "state.db")
    data = explain(CFG, store, LONE, now=NOW, proc=_proc(tmp_path))
    assert data["shared_capable"] is False and data["known_pairs"] == []
    assert data["ban"]["kind"] == "blacklist" and data["ban"]["reason"] == "repeat-offender"
    assert data["failures"][0]["text"] == "3/6" and data["failure_run"] == 3
    # history: the ban in force and the suspension that already ended, newest first
    assert [(h["kind"], h["ended"]) for h in data["history"]] == [
        ("blacklist", False), ("suspend", True)]
    assert data["kernel_limits"] == [
        {"table": "fg-reg-0123abcd", "limit": "register", "dropping": True, "expires": 9}]
    assert data["guard_drops"] == 42
    assert data["summary"][0].startswith(f"{LONE} is banned (repeat-offender)")
    assert any("register limit is dropping" in line for line in data["summary"])


def test_allow_list_and_gateway_membership(tmp_path: Path) -> None:
    store = _state(tmp_path / "state.db")
    allowed = explain(CFG, store, "10.9.1.2", now=NOW, proc=tmp_path)
    assert allowed["allow_listed"] == "10.9.0.0/16"
    assert allowed["summary"] == ["10.9.1.2 is in the allow list (10.9.0.0/16): never limited "
                                  "nor banned"]
    member = explain(CFG, store, "192.0.2.7", now=NOW, proc=tmp_path)
    assert member["gateway"] == "callcentre" and member["shared_capable"] is True
    assert member["kernel_limits"] == []  # no /proc tables here


def test_an_account(tmp_path: Path) -> None:
    store = _state(tmp_path / "state.db")
    data = explain(CFG, store, "1001", now=NOW)
    assert data["type"] == "account"
    assert [(p["source"], p["aor"]) for p in data["known_pairs"]] == [(NAT, "1001@pbx")]
    assert [(f["source"], f["text"]) for f in data["failures"]] == [(LONE, "3/6")]
    assert [b["ip"] for b in data["bans"]] == [LONE]
    assert [h["kind"] for h in data["history"]] == ["blacklist", "suspend"]
    stale = explain(CFG, store, "1010@PBX", now=NOW)
    assert [(s["ip"], s["aor"]) for s in stale["suspensions"]] == [(NAT, "1010@pbx")]
    assert explain(CFG, store, "1010@other", now=NOW)["suspensions"] == []
    assert explain(CFG, store, "nobody", now=NOW)["summary"] == [
        "nothing stops nobody from registering"]


def test_hashlimit_ipv6_table(tmp_path: Path) -> None:
    folder = tmp_path / "ip6t_hashlimit"
    folder.mkdir()
    (folder / "fg-reg-1").write_text("5 2001:db8:1:2:::0->:::0 10 320000 32000\n")
    assert hashlimits("2001:db8:1:2::", tmp_path) == [
        {"table": "fg-reg-1", "limit": "register", "dropping": True, "expires": 5}]


def test_the_command_prints_json_and_text(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    _state(state).close()
    config = tmp_path / "floodguard.toml"
    config.write_text(f'[state]\npath = "{state}"\n')
    result = CliRunner().invoke(explain_command, ["-c", str(config), "--json", "1010"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["type"] == "account" and data["target"] == "1010"
    result = CliRunner().invoke(explain_command, ["-c", str(config), NAT])
    assert result.exit_code == 0 and "shared-capable" in result.output
