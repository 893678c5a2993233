"""Loads a module built by fuzz/build.py (never the in-place build the tests use), and the
command line every fuzz target hands to atheris."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType

from build import module_path


def load(name: str) -> ModuleType:
    """The instrumented extension ``name``; the fuzz runner has built it already."""
    path = module_path(name)
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `python fuzz/build.py` first")
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules[f"fuzz_{name}"] = module
    return module


def argv() -> list[str]:
    """sys.argv, with the runner's executable wrapper as argv[0]: libFuzzer's -merge and
    -fork run argv[0] again, and a target script is not executable by itself."""
    return [os.environ.get("FUZZ_ARGV0", sys.argv[0]), *sys.argv[1:]]
