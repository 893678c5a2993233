"""Builds the C code under the fuzzers: ASan + UBSan + coverage for libFuzzer (via atheris).

Objects go to ``build/fuzz/`` only: the in-place extensions the tests import are never touched.
The scan and the parser's index are ``floodguard/sip/_scan.c`` and ``_index.c`` as they are;
the NFQUEUE binding is fuzzed through ``fuzz/nfq_harness.c``, which includes ``_nfq.c`` and
calls its datagram parser directly.
A module is rebuilt when a source is newer than it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "fuzz"
SANITIZE = ["-fsanitize=address,undefined,fuzzer-no-link", "-fno-sanitize-recover=all"]
CFLAGS = ["-O1", "-g", "-fno-omit-frame-pointer", "-std=gnu11", "-Wall", "-Wextra",
          "-Wno-unused-parameter", "-Wno-missing-field-initializers", "-shared", "-fPIC"]

# module name -> (main source, other sources it depends on)
MODULES = {
    "_scan": (ROOT / "floodguard/sip/_scan.c", [ROOT / "floodguard/sip/_scan_common.h"]),
    "_index": (ROOT / "floodguard/sip/_index.c", [ROOT / "floodguard/sip/_scan_common.h"]),
    "_nfq_fuzz": (ROOT / "fuzz/nfq_harness.c", [
        ROOT / "floodguard/kernel" / name for name in ("_nfq.c", "_nfq_netlink.h", "_nfq_packets.h")
    ]),
    "_fuzz_canary": (ROOT / "fuzz/canary.c", []),  # planted bugs: proves the sanitizers work
}


class BuildError(Exception):
    """The fuzzing build cannot be made (no clang, or a compile error)."""


def clang() -> str:
    found = os.environ.get("FUZZ_CC") or shutil.which("clang")
    if not found:
        raise BuildError("clang is missing: run `sudo make deps` (Debian packages clang and "
                         "libclang-rt-14-dev)")
    return found


def module_path(name: str) -> Path:
    return OUT / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"


def build(name: str) -> Path:
    """The instrumented module, compiled when missing or older than its sources."""
    main, deps = MODULES[name]
    out = module_path(name)
    newest = max(p.stat().st_mtime for p in (main, *deps, Path(__file__)))
    if out.exists() and out.stat().st_mtime >= newest:
        return out
    OUT.mkdir(parents=True, exist_ok=True)
    include = sysconfig.get_paths()["include"]
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")  # concurrent builds never mix
    cmd = [clang(), *CFLAGS, *SANITIZE, f"-I{include}", str(main), "-o", str(tmp)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"{' '.join(cmd)}\n{done.stdout}{done.stderr}")
    tmp.replace(out)
    return out


def build_all() -> dict[str, Path]:
    return {name: build(name) for name in MODULES}


if __name__ == "__main__":
    try:
        for mod, path in build_all().items():
            print(f"{mod}: {path}")
    except BuildError as exc:
        sys.exit(f"fuzz build: {exc}")
