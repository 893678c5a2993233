"""Fuzz target with planted failures, to prove the harness reports each kind (see canary.c).

An input starting with ``A`` reads past a bytes object, ``U`` overflows a signed int, ``M``
raises a differential Mismatch; anything else passes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

from instrumented import argv, load  # noqa: E402

canary = load("_fuzz_canary")


class Mismatch(AssertionError):
    """A planted differential failure."""


def check(data: bytes) -> None:
    if data.startswith(b"A"):
        canary.overread(bytes(data))
    elif data.startswith(b"U"):
        canary.overflow(len(data))
    elif data.startswith(b"M"):
        raise Mismatch("planted: scan and parser disagree")


if __name__ == "__main__":
    atheris.Setup(argv(), check)
    atheris.Fuzz()
