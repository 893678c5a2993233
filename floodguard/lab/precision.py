"""What the precision scenarios measured (``nat-office``, ``distributed-guess``) and their
acceptance checks: stop exactly the attacker, never its neighbours (issue #16).

``summary(m)`` adds to a run's result record: ``office`` (the office phones' registrations),
``owner`` (the guessed account's owner's registrations) and ``holds`` (what the guard did about
them: lockdowns, endpoint suspensions, account protections, from its events, and how many
guesses were answered after the account was protected). ``add_checks(r, add)`` applies the
scenarios' criteria to a result. Pure arithmetic, no I/O, so it is unit-tested.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from floodguard.config import SuspensionConfig

if TYPE_CHECKING:
    from floodguard.lab.stats import Measured

OFFICE_NEED_PCT = 99.9
GUESSER_MAX_ANSWERS = 40  # the guesser behind the office's NAT, in all
AFTER_PROTECTION_MAX = 30  # guesses answered once the account is protected

# add(name, passed, detail): record one check of the result being looked at
AddCheck = Callable[[str, bool, str], None]


def registrations(attempts: Sequence[Sequence[Any]], phone: int | None = None
                  ) -> dict[str, Any]:
    """Attempted, succeeded and the success in percent (rounded down to 0.01) of the
    registrations (rows ``[start, latency, outcome, phone]``), of one phone when given."""
    rows = [a for a in attempts if phone is None or int(a[3]) == phone]
    ok = sum(a[2] == "ok" for a in rows)
    pct = None if not rows else int(10000 * ok / len(rows)) / 100.0
    return {"attempted": len(rows), "succeeded": ok, "success_pct": pct,
            "outcomes": {o: sum(a[2] == o for a in rows) for o in sorted({a[2] for a in rows})}}


def holds(events: Sequence[dict[str, Any]], t0: float, attacks: dict[str, Any]
          ) -> dict[str, Any]:
    """The guard's endpoint decisions in the run, from its events."""
    seen = [e for e in events if float(e.get("ts", 0)) >= t0 - 1]
    protects = [e for e in seen if e.get("event") == "protect"]
    out: dict[str, Any] = {
        "lockdowns": [{"ip": e.get("ip"), "failures": e.get("failures"),
                       "at_s": round(float(e["ts"]) - t0, 2)}
                      for e in seen if e.get("event") == "lockdown"],
        "suspended_pairs": [[e.get("ip"), e.get("aor")] for e in seen
                            if e.get("event") == "suspend" and e.get("scope") == "aor"],
        "periods_ended": sum(e.get("event") in ("suspend_end", "lockdown_end") for e in seen),
        "protections": [{"aor": e.get("aor"), "sources": e.get("sources"),
                         "at_s": round(float(e["ts"]) - t0, 2)} for e in protects],
        "protected_at_s": None, "answered_after_protection": None,
    }
    guessers = attacks.get("guessers")
    if protects:
        at = min(float(e["ts"]) for e in protects)
        out["protected_at_s"] = round(at - t0, 2)
        if isinstance(guessers, dict):
            out["answered_after_protection"] = sum(
                1 for t, status in guessers.get("log", []) if status is not None and t > at)
    return out


def summary(m: Measured) -> dict[str, Any]:
    """The precision scenarios' part of a result record (see the module docstring)."""
    return {
        "office": registrations(m.office_attempts) if m.office_attempts else None,
        "owner": registrations(m.attempts, m.owner) if m.owner is not None else None,
        "holds": holds(m.events, m.t0, m.attacks),
    }


def add_checks(r: dict[str, Any], add: AddCheck) -> None:
    """The precision scenarios' acceptance criteria for one result."""
    scenario, protected = r["scenario"], bool(r["protected"])
    attack = r.get("attack") or {}
    held = r.get("holds") or {}
    if scenario == "nat-office" and protected:
        office = r.get("office") or {}
        pct = office.get("success_pct")
        add(f"office phones' success >= {OFFICE_NEED_PCT:g}%",
            pct is not None and pct >= OFFICE_NEED_PCT and office.get("attempted", 0) > 0,
            f"{office.get('succeeded')}/{office.get('attempted')} ({pct}%)")
        retry = SuspensionConfig().register_retry
        stale = attack.get("stale-phone") or {}
        periods = 1 + int(held.get("periods_ended", 0))
        wrong = stale.get("wrong_answers")
        add(f"stale phone: <= {retry} wrong-password answers per suspension period",
            wrong is not None and wrong <= retry * periods and not stale.get("accepted"),
            f"{wrong} wrong-password answers in {periods} period(s); "
            f"{stale.get('guesses', 0) - stale.get('guesses_answered', 0)} tries unanswered")
        spray = attack.get("spray") or {}
        answers = spray.get("answered")
        add(f"guesser: <= {GUESSER_MAX_ANSWERS} answers, nothing accepted",
            answers is not None and answers <= GUESSER_MAX_ANSWERS and spray.get("guesses", 0) > 0
            and not spray.get("accepted"),
            f"{answers} answers to {spray.get('guesses')} guesses, "
            f"{spray.get('accepted')} accepted; lockdowns: {held.get('lockdowns')}")
    if scenario == "distributed-guess" and protected:
        owner = r.get("owner") or {}
        add("owner: every registration succeeded",
            owner.get("attempted", 0) > 0 and owner.get("succeeded") == owner.get("attempted"),
            f"{owner.get('succeeded')}/{owner.get('attempted')}")
        after = held.get("answered_after_protection")
        add(f"<= {AFTER_PROTECTION_MAX} guesses answered once the account is protected",
            after is not None and after <= AFTER_PROTECTION_MAX,
            f"protected after {held.get('protected_at_s')} s, {after} answered since, "
            f"{(attack.get('guessers') or {}).get('guesses_answered')} in all")
