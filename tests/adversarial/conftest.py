"""Fixtures for the attack regression tests: the real stack in private network namespaces.

One module per attack. They reuse the integration fixtures (namespaces joined by a veth pair,
floodguard's rules, the guard, Kamailio or floodguard's registrar) and, like them, need root:
each module carries ``pytestmark = pytest.mark.root(<tools>)``, so without root or a tool it
fails loudly, never skipped (tests/conftest.py).
"""

from __future__ import annotations

from tests.integration.conftest import (  # noqa: F401 — fixtures shared with the integration tier
    backend,
    glab,
    lab,
    make_netns,
)
