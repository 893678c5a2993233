"""``floodguard allow add|remove|list`` and ``blacklist remove`` of a CIDR on the real kernel sets,
in a fresh namespace (issue #17 item 11): the run-time allow list reaches the kernel allow set,
lifts the bans it covers, survives ``apply``, and leaves the config's static entries alone."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from .conftest import CLIENTS4, CLIENTS6, Lab

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save")


@pytest.fixture
def backend() -> str:
    return "nft"  # the sets are the same on both backends; one is enough here


def members(lab: Lab, name: str) -> set[str]:
    """The entries of one kernel set as networks (``10.0.0.1/32``), without their timeouts."""
    text = lab.server.run("ipset", "list", name).stdout
    body = text.split("Members:\n", 1)[1]
    return {str(ipaddress.ip_network(line.split()[0])) for line in body.splitlines()
            if line.strip()}


def fg_json(lab: Lab, *args: str, check: bool = True) -> Any:
    result = lab.server.floodguard(*args, "--json", check=check)
    return json.loads(result.stdout)


def test_allow_list_reaches_the_kernel_lifts_bans_and_survives_apply(lab: Lab) -> None:
    config = str(lab.config())
    lab.apply(lab.config())
    static4 = f"{CLIENTS4[2]}/32"
    assert static4 in members(lab, "floodguard-allow")
    for ip in (CLIENTS4[0], CLIENTS6[0]):
        lab.server.floodguard("blacklist", "add", ip, "-c", config)
    assert f"{CLIENTS4[0]}/32" in members(lab, "floodguard-ban")
    assert "fd00:fa:0:1::/64" in members(lab, "floodguard-ban-net6")

    added = fg_json(lab, "allow", "add", CLIENTS4[0], "fd00:fa:0:1::/64", "--ttl", "1h",
                    "-c", config)
    assert [(a["network"], a["lifted"]) for a in added] == [
        (f"{CLIENTS4[0]}/32", [CLIENTS4[0]]), ("fd00:fa:0:1::/64", ["fd00:fa:0:1::"])]
    assert f"{CLIENTS4[0]}/32" in members(lab, "floodguard-allow")
    assert "fd00:fa:0:1::/64" in members(lab, "floodguard-allow-v6")
    assert f"{CLIENTS4[0]}/32" not in members(lab, "floodguard-ban")
    assert "fd00:fa:0:1::/64" not in members(lab, "floodguard-ban-net6")
    refused = lab.server.floodguard("blacklist", "add", CLIENTS4[0], "-c", config, check=False)
    assert refused.returncode == 4 and "allow list" in refused.stderr

    # apply syncs the allow set to the config's list *and* the run-time one
    report = json.loads(lab.apply(lab.config(), "--json").stdout)
    assert report["allow_removed"] == [] and report["allow_added"] == []
    assert f"{CLIENTS4[0]}/32" in members(lab, "floodguard-allow")

    listed = fg_json(lab, "allow", "list", "-c", config)
    assert {(r["network"], r["source"]) for r in listed} >= {
        (f"{CLIENTS4[0]}/32", "runtime"), ("fd00:fa:0:1::/64", "runtime"), (static4, "config")}

    # removing a run-time entry the config also lists keeps it in the kernel
    fg_json(lab, "allow", "add", CLIENTS4[2], "-c", config)
    assert fg_json(lab, "allow", "remove", CLIENTS4[0], CLIENTS4[2], "-c", config) == {
        "removed": [f"{CLIENTS4[0]}/32", static4], "not_allowed": []}
    assert f"{CLIENTS4[0]}/32" not in members(lab, "floodguard-allow")
    assert static4 in members(lab, "floodguard-allow")
    lab.server.floodguard("blacklist", "add", CLIENTS4[0], "-c", config)
    assert f"{CLIENTS4[0]}/32" in members(lab, "floodguard-ban")


def test_blacklist_remove_cidr_and_all_on_the_kernel(lab: Lab) -> None:
    config = str(lab.config())
    lab.apply(lab.config())
    for ip in (CLIENTS4[0], CLIENTS4[1], CLIENTS6[1], CLIENTS6[3]):
        lab.server.floodguard("blacklist", "add", ip, "-c", config)
    lifted = fg_json(lab, "blacklist", "remove", "10.250.0.0/24", "fd00:fa:0:2::7/128",
                     "-c", config)
    assert lifted == {"removed": [CLIENTS4[0], CLIENTS4[1], "fd00:fa:0:2::"], "not_banned": []}
    assert members(lab, "floodguard-ban") == set()
    assert members(lab, "floodguard-ban-net6") == {"fd00:fa:0:4::/64"}
    everything = lab.server.floodguard("blacklist", "remove", "--all", "-c", config).stdout
    assert everything == "removed fd00:fa:0:4::\n"
    assert members(lab, "floodguard-ban-net6") == set()
    removed = fg_json(lab, "remove", "--backend", "nft", "-c", config)
    assert removed["backends"] == ["nft"] and "floodguard-allow" in removed["destroyed_sets"]
    assert "floodguard-allow" not in lab.server.ipset_list()
