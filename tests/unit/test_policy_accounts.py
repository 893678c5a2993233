"""Account protection (policy/accounts.py): distinct failing sources per account within the
window, escalation, the end of a protection reported once, bounded tables, snapshots."""

from __future__ import annotations

import pytest

from floodguard.policy.accounts import AccountProtection

KW = {"threshold": 5, "window": 600.0, "base": 180.0, "escalation": 2.0, "max_time": 1000.0,
      "decay": 3600.0}
AOR = "alice@example.com"


def guesses(table: AccountProtection, now: float, sources: int, aor: str = AOR,
            first: int = 0) -> list[tuple[int, int] | None]:
    return [table.failure(now + i, f"192.0.2.{first + i}", aor, **KW) for i in range(sources)]


def test_the_fifth_distinct_source_protects_the_account() -> None:
    table = AccountProtection(100)
    got = guesses(table, 1000.0, 5)
    assert got[:4] == [None] * 4 and got[4] == (180, 5)
    assert table.until(1004.0, AOR) == 1184.0
    assert table.until(1004.0, "bob@example.com") is None
    # while protected nothing more is counted
    assert guesses(table, 1010.0, 10, first=50) == [None] * 10


def test_one_source_failing_often_is_not_distributed_guessing() -> None:
    table = AccountProtection(100)
    assert [table.failure(1000.0 + i, "192.0.2.1", AOR, **KW) for i in range(50)] == [None] * 50
    assert table.until(1100.0, AOR) is None


def test_failures_older_than_the_window_do_not_count() -> None:
    table = AccountProtection(100)
    guesses(table, 1000.0, 4)
    assert table.failure(1700.0, "192.0.2.99", AOR, **KW) is None  # the four are 700 s old


def test_a_success_takes_the_source_out_of_the_count() -> None:
    table = AccountProtection(100)
    guesses(table, 1000.0, 4)
    table.success("192.0.2.3", AOR)
    assert table.failure(1010.0, "192.0.2.40", AOR, **KW) is None
    assert table.failure(1011.0, "192.0.2.41", AOR, **KW) == (180, 5)


def test_protection_escalates_and_its_end_is_reported_once() -> None:
    table = AccountProtection(100)
    assert guesses(table, 1000.0, 5)[-1] == (180, 5)
    assert table.expired(1100.0) == []
    assert table.expired(1200.0) == [AOR] and table.expired(1201.0) == []
    assert table.until(1200.0, AOR) is None
    assert guesses(table, 1300.0, 5, first=10)[-1] == (360, 5)  # level 2
    assert table.level(1305.0, AOR) == 2
    # re-protected after it ended but before expired() ran: the end is still reported
    table.until(1700.0, AOR)
    assert guesses(table, 1700.0, 5, first=20)[-1] == (720, 5)
    assert table.expired(1705.0) == [AOR]
    assert table.until(1705.0, AOR) == 1704.0 + 720


def test_lift_ends_protection_and_history() -> None:
    table = AccountProtection(100)
    guesses(table, 1000.0, 5)
    assert table.lift(1010.0, AOR) is True and table.until(1010.0, AOR) is None
    assert table.lift(1010.0, AOR) is False
    assert guesses(table, 1020.0, 5, first=30)[-1] == (180, 5)  # level 1 again


def test_tables_are_bounded() -> None:
    table = AccountProtection(50)
    for n in range(2000):
        guesses(table, 1000.0 + n, 5, aor=f"user{n}@example.com")
    assert all(len(t) <= 50 for t in table.tables.values())
    assert len(table.active(3000.0)) <= 50


@pytest.mark.parametrize("age", [0.0, 100.0])
def test_snapshot_round_trip(age: float) -> None:
    table = AccountProtection(100)
    guesses(table, 1000.0, 5)
    guesses(table, 1000.0, 3, aor="bob@example.com")
    state = table.export(1010.0)
    again = AccountProtection(100)
    again.restore(5000.0 + age, state, 600.0, 3600.0)  # another clock: times are relative
    assert again.until(5000.0 + age, AOR) == pytest.approx(5000.0 + age + 174.0)
    assert again.level(5000.0 + age, AOR) == 1
    # bob's three failing sources are still counted: two more protect him
    assert again.failure(5001.0 + age, "192.0.2.77", "bob@example.com", **KW) is None
    assert again.failure(5002.0 + age, "192.0.2.78", "bob@example.com", **KW) == (180, 5)
