"""floodguard apply / remove / show on the real kernel, in fresh namespaces, on both backends."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from floodguard.kernel.iptables import parse_save
from floodguard.kernel.rules import PACKAGE_DIR
from floodguard.store import Store

from .conftest import CLIENTS4, CLIENTS6, FOREIGN_TOP, Lab

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save")

FOREIGN = FOREIGN_TOP


def add_foreign_state(lab: Lab) -> None:
    """Someone else's rule and set, which floodguard must leave exactly as they are."""
    for tool in (f"iptables-{lab.backend}", f"ip6tables-{lab.backend}"):
        lab.server.run(tool, "-A", "INPUT", *FOREIGN)
    lab.server.run("ipset", "create", "admin-set", "hash:ip")
    lab.server.run("ipset", "add", "admin-set", "192.0.2.1")


def per_family(lab: Lab, counters: bool = False) -> list[str]:
    ns, b, flag = lab.server, lab.backend, ["-c"] if counters else []
    return [ns.run(f"iptables-{b}-save", *flag).stdout,
            ns.run(f"ip6tables-{b}-save", *flag).stdout]


def assert_same_tables(lab: Lab, before: list[str], after: list[str]) -> None:
    """Exactly the same tables, chains and rules; legacy may keep tables it had to create.

    Legacy xtables tables cannot be unregistered from userspace once instantiated, so for that
    backend a table that did not exist before may remain, but only empty with ACCEPT policies.
    """
    for old_text, new_text in zip(before, after, strict=True):
        old, new = parse_save(old_text), parse_save(new_text)
        if lab.backend == "legacy":
            for name in set(new) - set(old):
                assert new[name].is_pristine(), f"table {name} left behind:\n{new_text}"
                del new[name]
        assert old == new, f"before:\n{old_text}\nafter:\n{new_text}"


def dry_run_rules(lab: Lab, config: Path) -> list[str]:
    text = lab.server.floodguard("apply", "--dry-run", "-c", str(config)).stdout
    return [line for line in text.splitlines() if line.startswith("-A ")]


def test_apply_is_idempotent_and_remove_restores_everything(lab: Lab) -> None:
    config = lab.config()
    add_foreign_state(lab)
    before, sets_before = per_family(lab), lab.server.ipset_list()

    result = lab.apply(config)
    assert f"applied ({lab.backend} backend)" in result.stdout
    installed = lab.server.save(lab.backend)
    # Every rendered rule is in the kernel, verbatim, and our jumps sit on top.
    for line in dry_run_rules(lab, config):
        assert line in installed.splitlines(), f"{line!r} not installed"
    for text in per_family(lab):
        filt, raw = parse_save(text)["filter"], parse_save(text)["raw"]
        assert [r.spec for r in filt.rules if r.chain == "INPUT"] == [
            "-j FLOODGUARD", " ".join(FOREIGN)]
        assert [r.spec for r in raw.rules if r.chain == "PREROUTING"] == ["-j FLOODGUARD-RAW"]
    status = lab.server.show(config)
    assert status["installed"] and status["backend"] == lab.backend
    sets = {row["name"]: row for row in status["sets"]}
    assert set(sets) == {"floodguard-ban", "floodguard-known", "floodguard-allow",
                         "floodguard-ban-net6", "floodguard-known-net6", "floodguard-allow-v6",
                         "floodguard-lockdown", "floodguard-lockdown-net6", "floodguard-pass",
                         "floodguard-pass-v6", "floodguard-challenged",
                         "floodguard-challenged-v6"}
    assert sets["floodguard-challenged-v6"]["kind"] == "challenged"
    assert sets["floodguard-allow"]["entries"] == 2 and sets["floodguard-allow-v6"]["entries"] == 2
    assert sets["floodguard-ban"]["maxelem"] == 1048576 and sets["floodguard-ban"]["references"]

    counted = [parse_save(text) for text in per_family(lab, counters=True)]
    again = lab.apply(config)
    assert "already up to date" in again.stdout
    assert lab.server.save(lab.backend) == installed
    # Nothing was even re-inserted: no counter went back (stray IPv6 ND traffic moves some).
    for old, new in zip(counted, [parse_save(t) for t in per_family(lab, counters=True)],
                        strict=True):
        for name, table in old.items():
            for was, now in zip(table.rules, new[name].rules, strict=True):
                assert (was.chain, was.spec) == (now.chain, now.spec)
                assert now.packets >= was.packets

    removed = lab.server.floodguard("remove", "-c", str(config))
    assert "destroyed 12 sets" in removed.stdout
    assert_same_tables(lab, before, per_family(lab))
    assert lab.server.ipset_list() == sets_before
    gone = lab.server.floodguard("show", "-c", str(config), check=False)
    assert gone.returncode == 1 and "NOT installed" in gone.stdout


def test_changed_config_updates_in_place(lab: Lab) -> None:
    first = lab.config('[sip]\nports = [5060, 5070]\nmode = "forward"\n'
                       'registrar_interfaces = ["eth1"]\n')
    lab.apply(first)
    lab.server.run("ipset", "add", "floodguard-ban", "198.51.100.1", "timeout", "500")
    second = lab.config('[sip]\nports = [5080]\ntransports = ["udp"]\n[limits]\n'
                        'register_rate = 2.5\n[blacklist]\nban_time = 600\n', name="second.toml")
    lab.apply(second)
    # The ban set was rebuilt for the new default timeout (swapped while in use by the rules),
    # and its entries came along.
    listed = lab.server.run("ipset", "list", "floodguard-ban").stdout
    assert "timeout 600" in listed and "198.51.100.1 timeout 4" in listed
    installed = lab.server.save(lab.backend)
    assert sorted(dry_run_rules(lab, second)) == sorted(
        line for line in installed.splitlines() if line.startswith("-A FLOODGUARD"))
    assert "-A FORWARD -j FLOODGUARD" not in installed and "-A INPUT -j FLOODGUARD" in installed
    assert "--hashlimit-above 150/min" in installed and "5070" not in installed


def broken_rules(tmp: Path) -> Path:
    """The real templates plus a chain whose IPv6 rule the kernel rejects (expiry 0)."""
    folder = tmp / "broken-rules"
    shutil.copytree(PACKAGE_DIR, folder)
    with (folder / "ruleset.toml").open("a", encoding="utf-8") as out:
        out.write('\n[[chain]]\ntable = "filter"\nname = "FLOODGUARD-BROKEN"\n'
                  'jump_from = { local = ["INPUT"], forward = ["FORWARD"] }\n'
                  '  [[chain.rule]]\n  when = ["ipv6"]\n'
                  '  spec = "-m hashlimit --hashlimit-above 1/sec --hashlimit-burst 5 '
                  '--hashlimit-name fg-broken --hashlimit-htable-expire 0 -j DROP"\n')
    return folder


def test_failed_apply_leaves_the_previous_state(lab: Lab) -> None:
    env = dict(os.environ, FLOODGUARD_RULES=str(broken_rules(lab.tmp)))
    add_foreign_state(lab)
    # Nothing installed yet: a failure must leave nothing behind, sets included.
    pristine, sets_pristine = per_family(lab), lab.server.ipset_list()
    failed = lab.apply(lab.config(), check=False, env=env)
    assert failed.returncode == 1 and "previous rules restored" in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1 and "Traceback" not in failed.stderr
    assert_same_tables(lab, pristine, per_family(lab))
    assert lab.server.ipset_list() == sets_pristine

    # Installed with another config: IPv4 succeeds, IPv6 fails, IPv4 goes back too.
    good = lab.config("[sip]\nports = [5070]\n", name="good.toml")
    lab.apply(good)
    lab.server.python(
        "from floodguard.config import load; from floodguard.kernel.rules import render; "
        "from floodguard.kernel.ipset import SetManager; "
        f"m = SetManager(render(load('{good}')).sets); m.add('ban', '198.51.100.9', 600)")
    before, sets_before = lab.server.save(lab.backend), lab.server.ipset_list()
    failed = lab.apply(lab.config(), check=False, env=env)
    assert failed.returncode == 1
    assert lab.server.save(lab.backend) == before
    drop_timeouts = lambda text: [ln.split(" timeout")[0] for ln in text.splitlines()]  # noqa: E731
    assert drop_timeouts(lab.server.ipset_list()) == drop_timeouts(sets_before)


def test_backends_are_never_mixed(lab: Lab) -> None:
    config = lab.config()
    lab.apply(config)
    other = "legacy" if lab.backend == "nft" else "nft"
    mixed = lab.server.floodguard("apply", "-c", str(config), "--backend", other, check=False)
    assert mixed.returncode == 1
    assert f"installed with the {lab.backend} backend" in mixed.stderr
    assert "FLOODGUARD" not in lab.server.run(f"iptables-{other}-save").stdout
    lab.server.floodguard("remove", "-c", str(config))  # auto finds the right backend
    assert "FLOODGUARD" not in lab.server.save(lab.backend)


def test_apply_restores_saved_bans_and_known_sources(lab: Lab) -> None:
    config = lab.config()
    store = Store(lab.tmp / "state.db")
    store.put_ban(CLIENTS4[0], "suspension", "brute force", 300)
    store.put_ban(CLIENTS6[0], "blacklist", "spraying", 900)
    store.put_ban(CLIENTS4[2], "blacklist", "allow-listed since", 900)  # allow list wins
    store.put_ban("198.51.100.7", "blacklist", "expired", 10, now=time.time() - 60)
    store.put_known(CLIENTS4[1], 7200)
    store.close()
    result = lab.apply(config)
    assert "restored 3 set entries from the state store" in result.stdout
    code = (
        "from floodguard.config import load; from floodguard.kernel.rules import render; "
        "from floodguard.kernel.ipset import SetManager; import json; "
        f"m = SetManager(render(load('{config}')).sets); "
        "print(json.dumps({k: m.list(k) for k in ('ban', 'known')}))")
    import json

    listed = json.loads(lab.server.python(code))
    bans = dict(listed["ban"])
    # a row saved per address (before per-prefix keying) comes back as its /64
    v6 = "fd00:fa:0:1::/64"
    assert CLIENTS6[0].startswith("fd00:fa:0:1::") and set(bans) == {CLIENTS4[0], v6}
    assert 290 <= bans[CLIENTS4[0]] <= 300 and 890 <= bans[v6] <= 900
    assert [ip for ip, _ in listed["known"]] == [CLIENTS4[1]]


def test_set_manager_in_a_namespace(make_netns: object) -> None:
    ns = make_netns("sets")  # type: ignore[operator]
    code = """
import dataclasses, json, subprocess
from floodguard.config import Config
from floodguard.kernel import SetFullError
from floodguard.kernel.rules import render
from floodguard.kernel.ipset import SetManager
specs = [dataclasses.replace(s, maxelem=2) if s.kind == "ban" else s for s in render(Config()).sets]
out = {}
with SetManager(specs) as m:
    out["created"] = m.ensure()
    out["again"] = m.ensure()  # the challenged set's netmask (own netlink create) matches too
    out["header"] = subprocess.run(["ipset", "list", "-t", "floodguard-challenged-v6"],
                                   capture_output=True, text=True).stdout
    m.add("ban", "10.1.0.1", 50)
    m.add("ban", "10.1.0.1", 40)  # renew, not an error
    m.add("ban", "2001:db8::1")
    m.add("ban", "10.1.0.2", 0)
    try:
        m.add("ban", "10.1.0.3", 50)
    except SetFullError as exc:
        out["full"] = str(exc)
    out["ban"] = sorted(m.list("ban"), key=str)
    out["test"] = [m.test("ban", "10.1.0.1"), m.test("ban", "10.1.0.9"),
                   m.test("allow", "127.0.0.5")]
    out["removed"] = [m.remove("ban", "10.1.0.1"), m.remove("ban", "10.1.0.1")]
    m.flush("ban")
    out["after_flush"] = m.list("ban")
    out["destroyed"] = m.destroy()
print(json.dumps(out))
"""
    import json

    out = json.loads(ns.python(code))
    assert len(out["created"]) == 12 and out["again"] == []
    header = out["header"]
    assert "family inet6" in header and "netmask 64 timeout 32" in header, header
    assert out["full"] == "ipset floodguard-ban is full: 10.1.0.3 was not added"
    ban = {ip: left for ip, left in out["ban"]}
    # an IPv6 source is kept per /64 (limits.ipv6_prefix)
    assert 38 <= ban["10.1.0.1"] <= 40 and ban["10.1.0.2"] == 0 and ban["2001:db8::/64"] > 3000
    assert out["test"] == [True, False, False]  # allow set is empty until apply syncs it
    assert out["removed"] == [True, False]
    assert out["after_flush"] == [] and len(out["destroyed"]) == 12
    assert ns.run("ipset", "list", "-n").stdout == ""
