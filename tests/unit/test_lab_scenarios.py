"""The lab's scenario registry: every scenario in it is known to the runner, the attack
generators, the report and the command line, so their lists can no longer disagree."""

from __future__ import annotations

import html
from pathlib import Path
from unittest import mock

import pytest
from click.testing import CliRunner

from floodguard.lab import attacks, command, report, scenarios, sip
from floodguard.lab.runner import Lab, LabSettings
from floodguard.lab.topology import Topology

README_SCENARIOS = ("volume", "botnet", "botnet-noauth", "botnet-options", "botnet-junk",
                    "bruteforce", "scanner", "contact-abuse", "hijack", "storm", "fresh-start",
                    "fresh-start-forged", "nat-office", "distributed-guess")


def _lab() -> Lab:
    lab = Lab(LabSettings())
    lab.topology = Topology(phones=560, attackers=116)  # addresses only: nothing is built
    return lab


def _result(name: str) -> dict:
    return {"scenario": name, "protected": True, "legit_succeeded": 1, "legit_attempted": 1,
            "attack_sent": 10, "attack_dropped_kernel": 5, "attack_dropped_guard": 1,
            "attack_reached_registrar": 4, "banned_sources": 0, "attack": {}}


def test_registry_holds_the_documented_scenarios_in_order() -> None:
    assert scenarios.NAMES == README_SCENARIOS
    assert all(s.name == name for name, s in scenarios.SCENARIOS.items())
    with pytest.raises(TypeError):
        scenarios.SCENARIOS["x"] = scenarios.SCENARIOS["volume"]  # type: ignore[index]
    with pytest.raises(ValueError, match="unknown scenario"):
        scenarios.get("nope")


@pytest.mark.parametrize("sipvicious", [True, False])
@pytest.mark.parametrize("name", scenarios.NAMES)
def test_runner_starts_every_scenario_from_the_registry(name: str, sipvicious: bool,
                                                        tmp_path: Path) -> None:
    scenario = scenarios.get(name)
    with mock.patch("shutil.which", return_value="/usr/bin/svcrack" if sipvicious else None):
        commands = _lab().attack_commands(name, tmp_path)
    expected = [g.process for g in scenario.generators]
    if sipvicious:
        expected += [t.name for t in scenario.tools]
    assert [n for n, _ in commands] == expected
    assert len(set(expected)) == len(expected)  # one log and one summary per process
    for generator, (_, argv) in zip(scenario.generators, commands, strict=False):
        assert argv[1:4] == ["-m", "floodguard.lab.attacks", generator.attack]
        assert generator.attack in attacks.ATTACKS
        if generator.target is not None:
            index = (generator.target(LabSettings()) if callable(generator.target)
                     else generator.target)
            assert argv[argv.index("--target") + 1] == sip.phone_user(index)
    assert bool(commands) != scenario.storm  # the storm is the phones' own doing


def test_runner_refuses_a_scenario_the_registry_does_not_hold(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        _lab().attack_commands("nope", tmp_path)
    with pytest.raises(ValueError, match="unknown scenario"):
        Lab(LabSettings(workdir=tmp_path)).run("nope", True)


def test_a_lab_without_enough_attacker_addresses_says_so(tmp_path: Path) -> None:
    lab = _lab()
    lab.topology = Topology(phones=560, attackers=16)
    with pytest.raises(ValueError, match="guessers needs 116 addresses in the attackers "
                                         "namespace, the lab has 16"):
        lab.attack_commands("distributed-guess", tmp_path)


def test_svcrack_gets_a_word_list_with_the_password(tmp_path: Path) -> None:
    with mock.patch("shutil.which", return_value="/usr/bin/svcrack"):
        commands = dict(_lab().attack_commands("bruteforce", tmp_path))
    argv = commands["svcrack"]
    words = Path(argv[argv.index("-d") + 1]).read_text().split()
    assert sip.password(argv[argv.index("-u") + 1]) in words


def test_attack_generators_are_exactly_those_the_registry_starts() -> None:
    started = {g.attack for s in scenarios.SCENARIOS.values() for g in s.generators}
    assert set(attacks.ATTACKS) == started
    assert all(callable(f) for f in attacks.ATTACKS.values())


@pytest.mark.parametrize("name", scenarios.NAMES)
def test_report_describes_every_scenario(name: str) -> None:
    scenario = scenarios.get(name)
    assert report.description(name) == scenario.description != ""
    table = report.format_table([_result(name)])
    assert table.startswith(f"{name}: {scenario.description} [floodguard registrar]")
    assert html.escape(scenario.description) in report.render_html([_result(name)])
    details = report.scenario_details(_result(name))
    labels = [label for label, _ in report.result_rows(_result(name))]
    for label, value in details:
        assert isinstance(value, str) and label in labels


def test_command_line_offers_every_scenario() -> None:
    assert command._scenarios(("all",)) == list(scenarios.NAMES)
    for name in scenarios.NAMES:
        assert command._scenarios((name,)) == [name]
    help_text = CliRunner().invoke(command.lab_command, ["--help"]).output
    assert all(name in " ".join(help_text.split()) for name in scenarios.NAMES)
    bad = CliRunner().invoke(command.lab_command, ["--scenario", "nope"])
    assert bad.exit_code == 2 and "unknown scenario" in bad.output
