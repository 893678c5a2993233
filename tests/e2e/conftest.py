"""Fixtures for the end-to-end tests: the attack lab (floodguard/lab) with real peers.

Each test module builds one lab (five private network namespaces, addresses only inside them)
and runs scenarios in it, each from a clean registrar host; a scenario's result is computed once
and shared by the tests that look at it. When the module is done the lab is torn down and the
teardown itself is checked: no namespace and no process of the lab may be left.

Short runs keep the suite to a few minutes: 4 s of measured attack per scenario (the attack keeps
running until the registrations started in that window have finished). Needs root, iptables,
ipset, conntrack, SIPVicious and Kamailio: each module names them in
``pytestmark = pytest.mark.root(...)``, and without them the tests fail, never skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from floodguard.lab.runner import Lab, LabSettings
from floodguard.lab.topology import lab_namespaces, lab_processes

DURATION = 4.0


class LabSession:
    """One lab and the results of the scenarios run in it so far."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.results: dict[tuple[str, bool], dict[str, Any]] = {}

    def result(self, scenario: str, protected: bool = True) -> dict[str, Any]:
        key = (scenario, protected)
        if key not in self.results:
            self.results[key] = self.lab.run(scenario, protected)
        return self.results[key]


def assert_nothing_left(lab: Lab, tag: str) -> None:
    """No namespace of this lab and no process it started (each carries FLOODGUARD_LAB=tag)."""
    assert lab.topology is None
    left = [ns for ns in lab_namespaces() if ns.split("-")[1] == tag]
    assert not left, f"namespaces left behind: {left}"
    pids = lab_processes(tag)
    assert not pids, f"processes left behind: {sorted(pids)}"


def make_session(tmp: Path, **settings: Any) -> Iterator[LabSession]:
    workdir = tmp / "lab"
    lab = Lab(LabSettings(duration=DURATION, workdir=workdir, keep_workdir=True, **settings))
    lab.__enter__()
    assert lab.topology is not None
    tag = lab.topology.tag
    assert set(lab.topology.namespaces) <= set(lab_namespaces())
    try:
        yield LabSession(lab)
    finally:
        lab.close()
    assert_nothing_left(lab, tag)


@pytest.fixture(scope="module")
def fg_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSession]:
    """The lab with floodguard's own registrar behind the guard."""
    yield from make_session(tmp_path_factory.mktemp("fglab"))


@pytest.fixture(scope="module")
def kamailio_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSession]:
    """The lab with Kamailio (Debian package) behind the guard."""
    yield from make_session(tmp_path_factory.mktemp("kamlab"), registrar="kamailio")
