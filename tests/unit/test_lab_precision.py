"""The precision scenarios' arithmetic (``nat-office``, ``distributed-guess``): the office's and
the owner's registrations, the guard's endpoint decisions read from its events, and the checks
that pass and fail on them."""

from __future__ import annotations

from typing import Any

from floodguard.lab import precision
from floodguard.lab.stats import Measured, checks, summarise

T0 = 1000.0
OFFICE_IP = "10.203.0.1"


def _measured(scenario: str, **kw: Any) -> Measured:
    return Measured(scenario=scenario, protected=True, registrar="floodguard", t0=T0,
                    t_end=T0 + 5, **kw)


def _office_result(*, stale_wrong: int = 1, spray_answered: int = 12, office_fail: int = 0,
                   accepted: int = 0, ended: int = 0) -> dict[str, Any]:
    office = [[T0 + i / 10, 0.002, "ok", 2560 + i % 30] for i in range(100 - office_fail)]
    office += [[T0 + 1, None, "timeout", 2561]] * office_fail
    events = [{"event": "lockdown", "ts": T0 + 2.1, "ip": OFFICE_IP, "failures": 5},
              {"event": "suspend", "ts": T0 + 3, "ip": OFFICE_IP, "aor": "12590@lab",
               "scope": "aor", "failures": 6}]
    events += [{"event": "suspend_end", "ts": T0 + 4, "ip": OFFICE_IP}] * ended
    attacks = {"stale-phone": {"guesses": 2, "guesses_answered": 1,
                               "wrong_answers": stale_wrong, "accepted": 0},
               "spray": {"guesses": 9, "answered": spray_answered, "accepted": accepted}}
    return summarise(_measured("nat-office", attempts=[[T0, 0.001, "ok", 0]], events=events,
                               attacks=attacks, office_attempts=office))


def _failed(r: dict[str, Any]) -> list[str]:
    return [c.name for c in checks([r]) if not c.passed]


def test_registrations_per_phone_and_in_all() -> None:
    rows = [[T0, 0.01, "ok", 3], [T0, None, "timeout", 3], [T0, 0.01, "ok", 4]]
    assert precision.registrations(rows) == {
        "attempted": 3, "succeeded": 2, "success_pct": 66.66,
        "outcomes": {"ok": 2, "timeout": 1}}
    assert precision.registrations(rows, 4)["success_pct"] == 100.0
    assert precision.registrations(rows, 9)["success_pct"] is None


def test_nat_office_result_holds_the_lockdown_and_the_endpoint_suspension() -> None:
    r = _office_result()
    assert r["office"]["attempted"] == 100 and r["office"]["success_pct"] == 100.0
    held = r["holds"]
    assert held["lockdowns"] == [{"ip": OFFICE_IP, "failures": 5, "at_s": 2.1}]
    assert held["suspended_pairs"] == [[OFFICE_IP, "12590@lab"]]
    # an endpoint's suspension is not a source's ban
    assert r["banned_sources"] == 0
    assert _failed(r) == []


def test_nat_office_checks_fail_on_each_criterion() -> None:
    assert _failed(_office_result(office_fail=1)) == ["office phones' success >= 99.9%"]
    assert _failed(_office_result(stale_wrong=7)) == [
        "stale phone: <= 6 wrong-password answers per suspension period"]
    # a second suspension period allows six more
    assert _failed(_office_result(stale_wrong=7, ended=1)) == []
    assert _failed(_office_result(spray_answered=41)) == [
        "guesser: <= 40 answers, nothing accepted"]
    assert _failed(_office_result(accepted=1)) == ["guesser: <= 40 answers, nothing accepted"]


def _distributed_result(*, late: int, owner_fail: bool = False,
                        protect: bool = True) -> dict[str, Any]:
    log = [[T0 + 0.1 * i, 401] for i in range(5)]  # before the protection
    log += [[T0 + 0.6 + 0.01 * i, 401] for i in range(late)]  # answered after it
    log += [[T0 + 1 + 0.1 * i, None] for i in range(40)]
    events = [{"event": "protect", "ts": T0 + 0.55, "aor": "10003@lab", "sources": 5}]
    attempts = [[T0, 0.002, "ok", 3], [T0 + 3, 0.002, "ok", 3], [T0, 0.002, "ok", 1]]
    if owner_fail:
        attempts.append([T0 + 4, None, "timeout", 3])
    return summarise(_measured(
        "distributed-guess", attempts=attempts, events=events if protect else [], owner=3,
        attacks={"guessers": {"log": log, "guesses": len(log), "accepted": 0,
                              "guesses_answered": 5 + late}}))


def test_distributed_guess_counts_answers_after_the_protection() -> None:
    r = _distributed_result(late=3)
    assert r["owner"] == {"attempted": 2, "succeeded": 2, "success_pct": 100.0,
                          "outcomes": {"ok": 2}}
    assert r["holds"]["protected_at_s"] == 0.55
    assert r["holds"]["answered_after_protection"] == 3
    assert _failed(r) == []


def test_distributed_guess_checks_fail_on_each_criterion() -> None:
    answered = "<= 30 guesses answered once the account is protected"
    assert _failed(_distributed_result(late=31)) == [answered]
    assert _failed(_distributed_result(late=0, protect=False)) == [answered]
    # the owner's failure fails its check (and the 99.9 % of every phone)
    assert "owner: every registration succeeded" in _failed(
        _distributed_result(late=0, owner_fail=True))
