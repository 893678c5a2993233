"""What a bench_botnet cell proves: the one-sided 95 % lower bound of the phones' success."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from bench_botnet import lower_bound  # noqa: E402


def test_a_cell_of_200_phones_does_not_prove_99_9_percent() -> None:
    assert 98.0 < lower_bound(200, 200) < 99.0


def test_about_3000_clean_registrations_prove_99_9_percent() -> None:
    assert lower_bound(3000, 3000) > 99.9
    assert lower_bound(2000, 2000) < 99.9
    assert lower_bound(2999, 3000) < 99.9


def test_the_bound_rises_with_evidence_and_falls_with_failures() -> None:
    assert lower_bound(100, 100) < lower_bound(1000, 1000) < lower_bound(10000, 10000) < 100.0
    assert lower_bound(990, 1000) < lower_bound(999, 1000) < lower_bound(1000, 1000)
    assert lower_bound(0, 10) == 0.0
    assert lower_bound(0, 0) is None
