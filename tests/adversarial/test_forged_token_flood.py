"""Attack: a spoofed flood that forges the guard's public token prefix (issue 15).

A phone's answer to its first challenge carries the guard's token (``fg1.`` in the digest
opaque) and has a kernel budget class of its own, so it never competes with a flood that
carries no token. The prefix is public: an attacker who read floodguard's source puts it in
half of a spoofed flood of bogus credentials. Without more, that half fills the answers'
class (the new phones' answers are dropped with it) and the guard gets a second budget's worth
of junk, each a token it checks in Python. Only sources the registrar challenged within a
transaction's time may use the class (the kernel learns them from the registrar's 401/407):
the forged prefix from anywhere else buys nothing and meets the admission budget like any
other packet from an unknown source.

Run in the attack lab with the default config: 2,000 phones the guard has never seen register
at once (retrying until they are registered) while 25,000 spoofed sources send the flood as
fast as a sender manages here, in front of Kamailio and of floodguard's own registrar.
Measured: the new phones' registrations and time, what of the flood the answers' class dropped
(none may meet it), and how many unproven credentials reached the guard.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e import assertions as check
from tests.e2e.conftest import LabSession, make_session

pytestmark = pytest.mark.root("ip", "iptables", "ipset", "conntrack", "taskset", "kamailio",
                              "kamcmd")


@pytest.fixture(params=["kamailio", "floodguard"])
def forged_lab(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabSession]:
    # no SIPVicious and few real attacker hosts: only the spoofed botnet and the phones run
    yield from make_session(tmp_path_factory.mktemp("forged"), registrar=request.param,
                            sipvicious=False, attackers=2)


def test_forged_token_prefix_does_not_crowd_out_new_phones(forged_lab: LabSession) -> None:
    r = forged_lab.result("fresh-start-forged")
    verdicts = r["guard_verdicts"] or {}
    # every bogus credential the kernel let through (forged token or none) the guard refused
    forged_at_guard = verdicts.get("drop:unproven", 0) + verdicts.get("proof:stripped", 0)
    print(json.dumps({"registrar": r["registrar"], "fresh_start": {
        k: v for k, v in (r["fresh_start"] or {}).items() if k != "registered_at"},
        "attack_sent": r["attack_sent"], "forged_at_guard": forged_at_guard,
        "dropped_kernel_pct": r["attack_dropped_kernel_pct"],
        "legit_success_pct": r["legit_success_pct"],
        "by_rule": r["attack_dropped_kernel_by_rule"], "verdicts": verdicts,
        "duration_s": r["duration_s"]}))
    check.fresh_start_completes(r)
    # no forged packet ever met the answers' own budget class: only the new phones' answers
    # to their challenges used it (and stayed within it)
    assert r["attack_dropped_kernel_by_rule"].get("token-class", 0) <= 0.01 * r["attack_sent"], \
        check.brief(r)
    # the kernel drops most of the forged flood; what it admits is the budget's share, the
    # same as for a flood without the prefix
    assert r["attack_dropped_kernel_pct"] >= 50.0, check.brief(r)
    assert forged_at_guard <= 0.25 * r["attack_sent"], (forged_at_guard, check.brief(r))
