"""Checks for the whole test run: the compiled modules under test match their sources.

setup.py compiles the guard and the policy engine with mypyc; in a checkout installed with
``pip install -e`` the compiled module sits beside its source and Python imports it first. A
source edited after the build would then go untested: the run stops instead, asking for the
rebuild that ``make`` does by itself.
"""

from __future__ import annotations

import importlib.machinery
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def stale_builds() -> list[str]:
    """Sources newer than the compiled module beside them (whichever setup.py compiles)."""
    stale = []
    for source in sorted((ROOT / "floodguard").rglob("*.py")):
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            built = source.with_name(source.stem + suffix)
            if built.exists() and built.stat().st_mtime < source.stat().st_mtime:
                stale.append(str(source.relative_to(ROOT)))
    return stale


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = stale_builds()
    if stale:
        pytest.exit(f"compiled modules are older than their sources ({', '.join(stale)}): "
                    "rebuild with `make deps` (or `.venv/bin/pip install -e .`)", returncode=4)
