"""Golden renders of the kernel ruleset and the pure helpers of floodguard.kernel.rules (with
ruleset.py, queues.py and restore_plan.py beside it).

Regenerate the golden files after an intended change with
``FLOODGUARD_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit -k kernel`` and review the diff.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import floodguard
from floodguard import cli
from floodguard.config import Config, loads
from floodguard.kernel import queues, rules
from floodguard.kernel.restore_plan import dry_run_text, plan_table, restore_text
from floodguard.kernel.rules import (
    RenderError,
    hashlimit_args,
    hashlimit_rate,
    normalise_rate,
    render,
    string_match_arg,
)
from floodguard.kernel.ruleset import IPSET_MAX_TIMEOUT, TableState, allow_entries

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("FLOODGUARD_UPDATE_GOLDEN") == "1"

CONFIGS = {
    "defaults": "",
    "multiport_tcp": '[sip]\nports = [5060, 5070]\ntransports = ["tcp"]\n',
    "forward": '[sip]\nmode = "forward"\nregistrar_interfaces = ["eth1"]\n',
    "workers4": "[queue]\nnum = 10\nworkers = 4\n",
    "fail_closed": "[queue]\nfail_open = false\n",
    "monitor": '[guard]\nmode = "monitor"\n',
    "gateways": (
        '[[gateway]]\nname = "callcentre"\nsources = ["198.51.100.0/24", "2001:db8:c::/48"]\n'
        'cps = 50\n[[gateway]]\nname = "carrier"\nsources = ["203.0.113.7/32"]\ncps = 50\n'
    ),
    "custom": (
        "[limits]\nregister_rate = 2.5\nregister_burst = 4\nsip_rate = 0.5\nsip_burst = 5\n"
        "queue_budget = 5000\n"
        '[blacklist]\nallow = ["0.0.0.0/0", "2001:db8::/32", "192.0.2.7/32"]\nban_time = 600\n'
        '[scanner]\nuser_agents = ["friendly-scanner", "say \\"hi\\"\\\\", "\u4e2d\u6587"]\n'
        "[registrar]\nexpire = 1800\nmin_expire = 60\n"
    ),
}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"kernel_{name}.txt"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} missing: run with FLOODGUARD_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), (
        f"render differs from {path}; if intended, regenerate with FLOODGUARD_UPDATE_GOLDEN=1")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_golden_dry_run(name: str, tmp_path: Path) -> None:
    config_file = tmp_path / f"{name}.toml"
    # a state store of its own: apply renders the admission rate recorded there (none: the start)
    config_file.write_text(f'[state]\npath = "{tmp_path / "state.db"}"\n' + CONFIGS[name],
                           encoding="utf-8")
    result = CliRunner().invoke(cli.main, ["apply", "--dry-run", "-c", str(config_file)])
    assert result.exit_code == 0, result.output
    text = result.output.replace(str(config_file), f"<{name}.toml>")
    check_golden(name, text)


def test_render_is_pure_and_deterministic() -> None:
    cfg = loads(CONFIGS["custom"])
    assert render(cfg) == render(cfg)
    assert dry_run_text(render(cfg)) == dry_run_text(render(cfg))


def test_every_port_and_transport_is_covered_in_order() -> None:
    ruleset = render(loads('[sip]\nports = [5060, 5070]\ntransports = ["udp", "tcp"]\n'))
    dispatch = [r.spec for r in ruleset.rules if r.family == 4 and r.chain == "FLOODGUARD"]
    assert dispatch[1:] == [
        "-p udp -m udp --dport 5060 -j FLOODGUARD-SIP",
        "-p udp -m udp --dport 5070 -j FLOODGUARD-SIP",
        "-p tcp -m tcp --dport 5060 -j FLOODGUARD-SIP",
        "-p tcp -m tcp --dport 5070 -j FLOODGUARD-SIP",
        "-p tcp -m tcp --dport 5061 -j FLOODGUARD-TLS",  # TLS: limited and banned, not queued
    ]
    raw = [r.spec for r in ruleset.rules if r.family == 6 and r.chain == "FLOODGUARD-RAW"]
    assert raw[0] == "-m set --match-set floodguard-allow-v6 src -j RETURN"
    # every port's ban first, then every UDP port's lockdown, then every port into the limits
    assert all("floodguard-ban-net6" in spec for spec in raw[1:6]) and len(raw) == 14
    assert raw[5] == ("-p tcp -m tcp --dport 5061 -m set --match-set floodguard-ban-net6 src "
                      "-j DROP")
    assert raw[6:8] == [f"-p udp -m udp --dport {port} -m set --match-set floodguard-lockdown-net6 "
                        "src -m set ! --match-set floodguard-pass-v6 src,src -j DROP"
                        for port in (5060, 5070)]
    # local mode: SIP this host only routes to others is not limited
    assert raw[8] == "-m addrtype ! --dst-type LOCAL -j RETURN"
    assert raw[9:] == [
        "-p udp -m udp --dport 5060 -j FLOODGUARD-LIMIT",
        "-p udp -m udp --dport 5070 -j FLOODGUARD-LIMIT",
        "-p tcp -m tcp --dport 5060 -j FLOODGUARD-LIMIT",
        "-p tcp -m tcp --dport 5070 -j FLOODGUARD-LIMIT",
        "-p tcp -m tcp --dport 5061 -j FLOODGUARD-TLSLIMIT",
    ]
    tls = [r.spec for r in ruleset.rules
           if r.family == 4 and r.chain in ("FLOODGUARD-TLS", "FLOODGUARD-TLSLIMIT")]
    assert not any("NFQUEUE" in spec for spec in tls) and any("fg-sip-" in s for s in tls)


def _kind(spec: str) -> str:
    for mark, kind in (("floodguard-allow", "allow"), ("floodguard-ban", "ban"),
                       ("floodguard-lockdown", "lockdown"),
                       ("connlimit", "connlimit"), ("fg-syn-", "syn"), ("fg-reg-", "register"),
                       ("fg-sip-", "sip"), ("fg-bud-", "budget"), ("fg-gwy-", "gateway"),
                       ("-j FLOODGUARD-LIMIT", "limits"), ("-j FLOODGUARD-TLSLIMIT", "tls"),
                       ("--icase", "scanner"), ("-s ", "gateway-skip"), ("NFQUEUE", "queue"),
                       ("--dst-type LOCAL", "routed-skip"), ("fg-pro-", "proof-budget"),
                       ("-g FLOODGUARD-ANSWER", "proof-skip"),
                       ("--del-set", "challenge-used")):
        if mark in spec:
            return kind
    return spec


def test_cheapest_match_first() -> None:
    """Set lookups and limits in raw (before conntrack), string searches on what survives."""
    ruleset = render(loads('[sip]\ntransports = ["udp", "tcp"]\n[[gateway]]\nname = "gw"\n'
                           'sources = ["198.51.100.0/24"]\ncps = 50\n'))
    chain = lambda name: [_kind(r.spec) for r in ruleset.rules  # noqa: E731
                          if r.family == 4 and r.chain == name]
    assert {r.table for r in ruleset.rules if r.chain.endswith("LIMIT")} == {"raw"}
    assert chain("FLOODGUARD-RAW") == ["allow", "ban", "ban", "ban", "lockdown", "routed-skip",
                                       "limits", "limits", "tls"]
    # a gateway meets only its group's limit; the budget comes after both per-source limits
    # a token-bearing answer to a challenge has a budget of its own, the rest the shared one
    assert chain("FLOODGUARD-LIMIT") == ["gateway", "gateway-skip", "syn", "register", "sip",
                                         "proof-budget", "proof-skip", "budget"]
    # only a challenged source may use it, once per challenge
    assert all("floodguard-challenged src" in r.spec for r in ruleset.rules
               if r.family == 4 and "fg1." in r.spec)
    assert chain("FLOODGUARD-ANSWER") == ["challenge-used"]
    assert chain("FLOODGUARD-TLSLIMIT") == ["gateway", "gateway-skip", "syn", "sip"]
    # filter: the scanner searches and the connection cap on what survived, then the queue
    assert chain("FLOODGUARD-SIP") == ["allow", *["scanner"] * 5, "gateway-skip", "connlimit",
                                       "queue"]
    assert chain("FLOODGUARD-TLS") == ["allow", "gateway-skip", "connlimit"]
    # in raw only the REGISTER limit's match and, past every per-source limit, the token's
    assert not any("-m string" in r.spec for r in ruleset.rules
                   if r.table == "raw" and "fg-reg-" not in r.spec and '"fg1."' not in r.spec)
    assert all(r.table == "filter" for r in ruleset.rules if "NFQUEUE" in r.spec)


def test_forward_mode_skips_the_limits_for_the_registrar_side() -> None:
    ruleset = render(loads('[sip]\nmode = "forward"\nregistrar_interfaces = ["eth1"]\n'))
    raw = [r.spec for r in ruleset.rules if r.family == 4 and r.chain == "FLOODGUARD-RAW"]
    assert raw.index("-i eth1 -j RETURN") == 5  # after the bans and lockdown, before the limits
    assert raw[6:] == ["-p udp -m udp --dport 5060 -j FLOODGUARD-LIMIT",
                       "-p tcp -m tcp --dport 5060 -j FLOODGUARD-LIMIT",
                       "-p tcp -m tcp --dport 5061 -j FLOODGUARD-TLSLIMIT"]


def test_forward_mode_hooks_forward_only() -> None:
    ruleset = render(loads('[sip]\nmode = "forward"\nregistrar_interfaces = ["eth1"]\n'))
    assert {(j.table, j.chain) for j in ruleset.jumps} == {("raw", "PREROUTING"),
                                                           ("filter", "FORWARD")}
    forward = [j.target for j in ruleset.jumps if j.family == 4 and j.chain == "FORWARD"]
    assert forward == ["FLOODGUARD", "FLOODGUARD-OUT"]  # limits before the response path


def test_guard_mark_matches_the_rules() -> None:
    value, mask = rules.guard_mark()
    assert (value, mask) == (0x100000, 0x100000)
    assert f"-m mark --mark {value:#x}/{mask:#x} -j RETURN" in {
        r.spec for r in render(Config()).rules}


def test_queue_options() -> None:
    assert queues.queue_args(0, True) == "--queue-num 0 --queue-bypass"
    assert queues.queue_args(0, False) == "--queue-num 0"


def test_queue_slices_cover_every_byte_once_and_pick_the_client_address() -> None:
    for workers in (2, 3, 4, 7, 64):
        for family in (4, 6):
            slices = queues.queue_slices(10, workers, family, 64)
            assert [s["queue_one"] for s in slices] == list(range(10, 10 + workers))
            owner = []
            for byte in range(256):
                hits = [s["queue_one"] for s in slices
                        if _in_span(s["slice_src"], byte)]
                assert len(hits) == 1, (workers, family, byte, hits)
                owner.append(hits[0])
            assert len(set(owner)) == workers
    # IPv4: the last octet of the source (bytes 12-15) / destination (16-19)
    v4 = queues.queue_slices(0, 2, 4, 64)[0]
    assert v4["slice_src"].startswith("0xc&0xff=") and v4["slice_dst"].startswith("0x10&0xff=")
    # IPv6 /64: the last byte of the source's /64 (byte 15) and of the destination's (byte 31)
    v6 = queues.queue_slices(0, 2, 6, 64)[0]
    assert v6["slice_src"].startswith("0xc&0xff=") and v6["slice_dst"].startswith("0x1c&0xff=")
    v6_48 = queues.queue_slices(0, 2, 6, 48)[0]
    assert v6_48["slice_src"].startswith("0xa&0xff=")


def _in_span(expr: str, byte: int) -> bool:
    span = expr.split("=", 1)[1]
    lo, _, hi = span.partition(":")
    return int(lo, 16) <= byte <= int(hi or lo, 16)


# Ground truth harvested from `iptables -S` (v1.8.9) for each rate as typed.
IPTABLES_PRINTS = {
    (7, 1): "7/sec", (13, 60): "13/min", (7, 3600): "7/hour", (999999, 1): "1000000/sec",
    (120, 60): "2/sec", (59, 3600): "59/hour", (3601, 3600): "3601/hour",
    (1441, 86400): "1441/day", (25, 86400): "25/day", (86400, 86400): "1/sec",
    (90, 60): "90/min", (61, 60): "61/min", (1, 3600): "1/hour",
}


@pytest.mark.parametrize(("typed", "printed"), sorted(IPTABLES_PRINTS.items()))
def test_rate_normalised_like_iptables(typed: tuple[int, int], printed: str) -> None:
    assert normalise_rate(*typed)[0] == printed


def test_rate_from_config_values() -> None:
    assert hashlimit_rate(5) == ("5/sec", 1000)
    assert hashlimit_rate(2.5) == ("150/min", 60000)
    assert hashlimit_rate(1 / 3) == ("20/min", 60000)
    assert hashlimit_rate(20000) == ("20000/sec", 1000)
    with pytest.raises(RenderError, match="too low"):
        hashlimit_rate(1 / 86400)
    with pytest.raises(RenderError, match="too high"):
        hashlimit_rate(2_000_000)


def test_hashlimit_name_follows_parameters() -> None:
    a = hashlimit_args("reg", 5, 10, family=4, htable_size=1, htable_max=2)
    b = hashlimit_args("reg", 6, 10, family=4, htable_size=1, htable_max=2)
    name = lambda text: text.split("--hashlimit-name ")[1].split()[0]  # noqa: E731
    assert name(a) != name(b) and len(name(a)) <= 15
    assert name(a) == name(hashlimit_args("reg", 5, 10, family=4, htable_size=1, htable_max=2))
    assert "--hashlimit-srcmask 64" in hashlimit_args("reg", 5, 10, family=6, source_prefix=64)
    assert "srcmask" not in hashlimit_args("reg", 5, 10, family=4, source_prefix=32)


def test_hashlimit_expiry_is_always_explicit() -> None:
    # 2/sec with burst 1 refills in 0.5 s: an expiry of 1000 ms would equal the unit and vanish
    # from iptables-save, so it is nudged.
    text = hashlimit_args("x", 2, 1, family=4, min_expire_ms=0)
    assert "--hashlimit-htable-expire 2000" in text
    budget = hashlimit_args("budget", 20000.0, 20000, family=4, per_source=False,
                            min_expire_ms=10000)
    assert "--hashlimit-mode" not in budget and "--hashlimit-htable-expire 10000" in budget


def test_string_match_quoting() -> None:
    assert string_match_arg("friendly-scanner") == '--string "friendly-scanner"'
    assert string_match_arg('a"b\\c') == '--string "a\\"b\\\\c"'
    assert string_match_arg("\u4e2d") == '--hex-string "|e4b8ad|"'
    with pytest.raises(RenderError):
        string_match_arg("x" * 129)


def test_allow_entries_split_zero_prefix() -> None:
    assert allow_entries(["0.0.0.0/0", "10.0.0.0/8", "::/0"], 4) == (
        "0.0.0.0/1", "128.0.0.0/1", "10.0.0.0/8")
    assert allow_entries(["0.0.0.0/0", "::/0"], 6) == ("::/1", "8000::/1")


def test_set_specs() -> None:
    cfg = loads("[blacklist]\nban_time = 3000000\nmax_ban_time = 3000000\n")
    sets = {s.name: s for s in render(cfg).sets}
    assert set(sets) == {"floodguard-ban", "floodguard-known", "floodguard-allow",
                         "floodguard-ban-net6", "floodguard-known-net6", "floodguard-allow-v6",
                         "floodguard-lockdown", "floodguard-lockdown-net6", "floodguard-pass",
                         "floodguard-pass-v6", "floodguard-challenged",
                         "floodguard-challenged-v6"}
    assert sets["floodguard-ban"].timeout == IPSET_MAX_TIMEOUT
    known6 = sets["floodguard-known-net6"]
    assert known6.timeout == 7200 and known6.family == 6
    # IPv6 sources are banned and known per limits.ipv6_prefix
    assert (known6.type, known6.prefix) == ("hash:net", 64)
    assert (sets["floodguard-ban-net6"].type, sets["floodguard-ban-net6"].prefix) == (
        "hash:net", 64)
    assert sets["floodguard-ban"].prefix is None and sets["floodguard-allow-v6"].prefix is None
    wide = {s.name: s for s in render(loads("[limits]\nipv6_prefix = 56\n")).sets}
    assert wide["floodguard-ban-net6"].prefix == 56
    # the challenged set is written by the kernel (SET target): its netmask keys IPv6 per prefix
    challenged6 = sets["floodguard-challenged-v6"]
    assert (challenged6.type, challenged6.netmask, challenged6.prefix) == ("hash:ip", 64, None)
    assert challenged6.timeout == 32 and sets["floodguard-challenged"].netmask is None
    assert wide["floodguard-challenged-v6"].netmask == 56
    assert "netmask 56" in wide["floodguard-challenged-v6"].create_command()
    assert sets["floodguard-allow"].timeout is None
    assert sets["floodguard-ban"].maxelem >= 1_000_000


def test_plan_fresh_table_inserts_jumps_in_order() -> None:
    forward = '[sip]\nmode = "forward"\nregistrar_interfaces = ["eth1"]\n'
    target = render(loads(forward)).state(4, "filter")
    plan = plan_table("filter", TableState(), target)
    text = restore_text([plan])
    assert text.splitlines()[-3:] == ["-I FORWARD 1 -j FLOODGUARD-OUT",
                                      "-I FORWARD 1 -j FLOODGUARD", "COMMIT"]
    assert "-D " not in text and "-X " not in text


def test_plan_keeps_present_jumps_and_drops_stale_chains() -> None:
    target = TableState((("FLOODGUARD", ("-j DROP",)),), (("INPUT", ("-j FLOODGUARD",)),))
    current = TableState((("FLOODGUARD", ("-j ACCEPT",)), ("FLOODGUARD-OLD", ("-j DROP",))),
                         (("INPUT", ("-j FLOODGUARD",)), ("OUTPUT", ("-j FLOODGUARD-OLD",))))
    text = restore_text([plan_table("filter", current, target)])
    assert text == (
        "*filter\n:FLOODGUARD - [0:0]\n:FLOODGUARD-OLD - [0:0]\n-D OUTPUT -j FLOODGUARD-OLD\n"
        "-X FLOODGUARD-OLD\n-A FLOODGUARD -j DROP\nCOMMIT\n")


def test_plan_repairs_duplicate_or_misordered_jumps() -> None:
    target = TableState((("FLOODGUARD", ()), ("FLOODGUARD-OUT", ())),
                        (("FORWARD", ("-j FLOODGUARD", "-j FLOODGUARD-OUT")),))
    current = TableState((("FLOODGUARD", ()), ("FLOODGUARD-OUT", ())),
                         (("FORWARD", ("-j FLOODGUARD-OUT", "-j FLOODGUARD", "-j FLOODGUARD")),))
    plan = plan_table("filter", current, target)
    assert plan.delete_jumps == (("FORWARD", "-j FLOODGUARD-OUT"), ("FORWARD", "-j FLOODGUARD"),
                                 ("FORWARD", "-j FLOODGUARD"))
    assert plan.insert_jumps == (("FORWARD", "-j FLOODGUARD"), ("FORWARD", "-j FLOODGUARD-OUT"))


def test_plan_remove_everything() -> None:
    current = render(Config()).state(6, "filter")
    text = restore_text([plan_table("filter", current, TableState())])
    assert "-D INPUT -j FLOODGUARD\n" in text and "-D OUTPUT -j FLOODGUARD-OUT\n" in text
    assert "-X FLOODGUARD-SIP\n" in text and "-A " not in text and "-I " not in text


def test_template_errors_are_reported(tmp_path: Path) -> None:
    folder = tmp_path / "rules"
    shutil.copytree(rules.rules_dir(), folder)
    ruleset = folder / "ruleset.toml"
    original = ruleset.read_text(encoding="utf-8")
    ruleset.write_text(original.replace("{ban_set}", "{no_such_thing}"), encoding="utf-8")
    with pytest.raises(RenderError, match="unknown placeholder 'no_such_thing'"):
        render(Config(), folder)
    ruleset.write_text(original.replace('name = "FLOODGUARD-OUT"', 'name = "OTHER"'),
                       encoding="utf-8")
    with pytest.raises(RenderError, match="name must be FLOODGUARD"):
        render(Config(), folder)
    ruleset.write_text(original.replace("-j FLOODGUARD-SIP", "-j FLOODGUARD-NOPE"),
                       encoding="utf-8")
    with pytest.raises(RenderError, match="undeclared chain FLOODGUARD-NOPE"):
        render(Config(), folder)


def test_rules_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rules.RULES_ENV, str(tmp_path))
    assert rules.rules_dir() == tmp_path
    with pytest.raises(RenderError, match="no such file"):
        render(Config())


def test_rules_dir_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The argument, then $FLOODGUARD_RULES, then a complete override folder, then the package's
    templates, which are found without the source tree."""
    monkeypatch.delenv(rules.RULES_ENV, raising=False)
    override = tmp_path / "etc-rules"
    monkeypatch.setattr(rules, "OVERRIDE_DIR", override)
    assert rules.rules_dir() == rules.PACKAGE_DIR
    assert rules.PACKAGE_DIR.parent == Path(floodguard.__file__).resolve().parent
    override.mkdir()  # an empty override folder does not hide the package's templates
    assert rules.rules_dir() == rules.PACKAGE_DIR
    shutil.copytree(rules.PACKAGE_DIR, override, dirs_exist_ok=True)
    assert rules.rules_dir() == override
    assert render(Config()).source == str(override)
    monkeypatch.setenv(rules.RULES_ENV, str(tmp_path / "env"))
    assert rules.rules_dir() == tmp_path / "env"
    assert rules.rules_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv(rules.RULES_ENV)
    monkeypatch.setattr(rules, "PACKAGE_DIR", tmp_path / "nothing")
    shutil.rmtree(override)
    with pytest.raises(RenderError, match="rules templates not found"):
        rules.rules_dir()


def test_cli_render_error_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(rules.RULES_ENV, str(tmp_path))
    # the state store of this test's own (the host's may be written by another version)
    config = tmp_path / "floodguard.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "state.db"}"\n', encoding="utf-8")
    monkeypatch.setenv("FLOODGUARD_CONFIG", str(config))
    result = CliRunner().invoke(cli.main, ["apply", "--dry-run"])
    assert result.exit_code == 3
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("command", [["apply"], ["remove"], ["show"], ["show", "--json"]])
def test_cli_needs_root(command: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(cli.main, command)
    assert result.exit_code == 5
    message = "must be run as root (the firewall and ipsets need CAP_NET_ADMIN)"
    if "--json" in command:  # the error as JSON on stdout, same exit code
        assert json.loads(result.stdout)["error"] == {"message": message, "exit_code": 5,
                                                      "details": [message]}
    else:
        assert result.output.strip() == f"floodguard: {message}"


def test_the_registrars_challenges_fill_the_challenged_set_in_both_modes() -> None:
    """Local mode: a 401/407 leaving a UDP SIP port (OUTPUT); forward mode: one from the
    registrar's side (its mark). Either way before the queue, and never for TCP."""
    def out(text: str, family: int = 4) -> list[str]:
        return [r.spec for r in render(loads(text)).rules
                if r.family == family and r.chain == "FLOODGUARD-OUT"]

    local = out('[sip]\ntransports = ["udp", "tcp"]\n', 6)
    adds = [i for i, spec in enumerate(local) if "--add-set floodguard-challenged-v6 dst" in spec]
    assert len(adds) == 2 and all("-p udp -m udp --sport 5060" in local[i] for i in adds)
    assert ['"SIP/2.0 401 "' in local[adds[0]], '"SIP/2.0 407 "' in local[adds[1]]] == [True] * 2
    assert adds[-1] < min(i for i, spec in enumerate(local) if "NFQUEUE" in spec)
    forward = out('[sip]\nmode = "forward"\nregistrar_interfaces = ["eth1"]\n')
    adds = [i for i, spec in enumerate(forward) if "--add-set floodguard-challenged dst" in spec]
    assert len(adds) == 2
    assert all(forward[i].startswith("-p udp -m mark --mark 0x200000/0x200000") for i in adds)
    assert max(i for i, s in enumerate(forward) if "--set-xmark 0x200000" in s) < adds[0]
    assert not any("--add-set" in spec for spec in out('[sip]\ntransports = ["tcp"]\n'))
