"""Kamailio (Debian package) behind the guard, in the attack lab, with the same assertions as
floodguard's own registrar (the botnet's variants also unprotected, for comparison). The guard
runs with floodguard's default config."""

from __future__ import annotations

import pytest

from floodguard.lab.scenarios import BOTNET_VARIANTS

from . import assertions as check
from .conftest import LabSession

pytestmark = pytest.mark.root("ip", "iptables", "ipset", "conntrack", "taskset", "svcrack", "svmap",
                              "svwar", "kamailio", "kamcmd")

# the spoofed variants but bogus credentials (test_botnet_is_cut_in_the_kernel covers that)
VARIANTS = [name for name, _, _ in BOTNET_VARIANTS if name != "botnet"]


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


@pytest.mark.parametrize("variant", VARIANTS)
def test_botnet_variant_leaves_the_phones_alone(kamailio_lab: LabSession, variant: str) -> None:
    protected = kamailio_lab.result(variant)
    check.spoofed_variant_contained(protected)
    check.protected_beats_unprotected(protected, kamailio_lab.result(variant, protected=False))


def test_fresh_start_of_2000_new_phones_under_the_botnet(kamailio_lab: LabSession) -> None:
    check.fresh_start_completes(kamailio_lab.result("fresh-start"))


def test_nat_office_stops_only_the_guesser_and_the_stale_phone(kamailio_lab: LabSession) -> None:
    check.nat_office_only_the_attackers_stopped(kamailio_lab.result("nat-office"))


def test_distributed_guessing_protects_the_account_not_its_owner(
        kamailio_lab: LabSession) -> None:
    check.distributed_guess_stopped(kamailio_lab.result("distributed-guess"))
