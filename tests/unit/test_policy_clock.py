"""Clocks: the real monotonic one and the fake one tests drive."""

import pytest

from floodguard.clock import Clock, FakeClock, MonotonicClock


def test_monotonic_clock_moves_forward() -> None:
    clock: Clock = MonotonicClock()
    first = clock.now()
    assert clock.now() >= first


def test_fake_clock_set_and_advance() -> None:
    clock: Clock = FakeClock(5.0)
    assert clock.now() == 5.0
    assert isinstance(clock, FakeClock)
    assert clock.advance(2.5) == 7.5
    clock.set(10)
    assert clock.now() == 10.0


def test_fake_clock_refuses_to_go_back() -> None:
    clock = FakeClock(10.0)
    with pytest.raises(ValueError):
        clock.set(9.0)
    with pytest.raises(ValueError):
        clock.advance(-1)
