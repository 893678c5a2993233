"""Kamailio (Debian package) behind the guard, in the attack lab, with the same assertions as
floodguard's own registrar."""

from __future__ import annotations

import pytest

from . import assertions as check
from .conftest import LabSession

pytestmark = pytest.mark.root("ip", "iptables", "ipset", "conntrack", "taskset", "svcrack", "svmap",
                              "svwar", "kamailio", "kamcmd")


def test_botnet_is_cut_in_the_kernel(kamailio_lab: LabSession) -> None:
    check.botnet_cut_in_kernel(kamailio_lab.result("botnet"))


def test_volume_flood_is_limited_per_source(kamailio_lab: LabSession) -> None:
    check.volume_limited(kamailio_lab.result("volume"))


def test_bruteforce_source_is_banned_after_six_proven_failures(kamailio_lab: LabSession) -> None:
    check.bruteforce_banned(kamailio_lab.result("bruteforce"))


def test_scanners_are_dropped_in_the_kernel(kamailio_lab: LabSession) -> None:
    check.scanner_dropped(kamailio_lab.result("scanner"))


def test_contact_abuse_is_contained(kamailio_lab: LabSession) -> None:
    check.contact_abuse_contained(kamailio_lab.result("contact-abuse"))


def test_hijack_never_changes_the_victims_binding(kamailio_lab: LabSession) -> None:
    check.hijack_failed(kamailio_lab.result("hijack"))


def test_storm_of_500_phones_all_register(kamailio_lab: LabSession) -> None:
    check.storm_all_registered(kamailio_lab.result("storm"))
