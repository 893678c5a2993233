"""Runs the fuzzers: ``python fuzz/run.py [--seconds N] [scan|nfq ...] [-- FILE ...]``.

Builds the instrumented modules (fuzz/build.py), then runs each target under atheris with
AddressSanitizer and UndefinedBehaviorSanitizer for N seconds, starting from the committed
corpus in fuzz/corpus/<target>/ (read only: new inputs go to <work>/corpus/<target>/, work
being build/fuzz unless --work says otherwise). Exit status 0 only when no target crashed,
tripped a sanitizer or found a differential mismatch; a failing input is saved under
<work>/artifacts/ and named in the output.
With files after ``--``, each target runs on exactly those inputs (to reproduce a failure).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import build

HERE = Path(__file__).resolve().parent
TARGETS = {
    "scan": {"script": HERE / "scan_target.py", "dict": HERE / "sip.dict", "max_len": 8192},
    "nfq": {"script": HERE / "nfq_target.py", "dict": None, "max_len": 8192},
    "index": {"script": HERE / "index_target.py", "dict": HERE / "sip.dict", "max_len": 8192},
    "canary": {"script": HERE / "canary_target.py", "dict": None, "max_len": 64},
}
DEFAULT = ["scan", "nfq", "index"]  # canary: planted bugs, only run on purpose (tests)
# A target fails when its output shows any of these, whatever its exit status.
FAILURE = re.compile(r"ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|"
                     r"Uncaught Python exception|Mismatch|deadly signal|==ERROR")


class FuzzError(Exception):
    """The fuzzers cannot run here (atheris or clang missing)."""


def sanitizer_env() -> dict[str, str]:
    """LD_PRELOAD of atheris' ASan runtime (with libFuzzer and UBSan's handlers in it): it
    must come before anything else, and PYTHONMALLOC=malloc gives every bytes object its own
    allocation, so a read past one is caught."""
    try:
        import atheris
    except ImportError:
        raise FuzzError("atheris is missing: `.venv/bin/pip install -e '.[dev]'`") from None
    runtime = Path(atheris.path()) / "asan_with_fuzzer.so"
    if not runtime.exists():
        raise FuzzError(f"{runtime} is missing (atheris without its sanitizer runtime)")
    env = dict(os.environ)
    env.update(
        LD_PRELOAD=str(runtime),
        PYTHONMALLOC="malloc",
        ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:print_summary=1:"
                     "handle_abort=1:detect_stack_use_after_return=1:quarantine_size_mb=64",
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
    )
    symbolizer = shutil.which("llvm-symbolizer") or next(
        (str(p) for p in sorted(Path("/usr/lib").glob("llvm-*/bin/llvm-symbolizer"))), None)
    if symbolizer:
        env["ASAN_SYMBOLIZER_PATH"] = symbolizer
    return env


def command(name: str, seconds: int, files: list[str], out: Path, merge: bool = False,
            ) -> list[str]:
    spec = TARGETS[name]
    (out / "artifacts").mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(spec["script"]), f"-artifact_prefix={out}/artifacts/{name}-",
           f"-max_len={spec['max_len']}", "-timeout=10", "-rss_limit_mb=4096",
           "-print_final_stats=1"]
    if spec["dict"]:
        cmd.append(f"-dict={spec['dict']}")
    if files:
        return [*cmd, *files]
    work = out / "corpus" / name
    work.mkdir(parents=True, exist_ok=True)
    if merge:  # inputs from work that add coverage go into the committed corpus
        return [*cmd, "-merge=1", str(HERE / "corpus" / name), str(work)]
    return [*cmd, f"-max_total_time={seconds}", str(work), str(HERE / "corpus" / name)]


def run(name: str, seconds: int, files: list[str], env: dict[str, str], work: Path,
        merge: bool = False) -> bool:
    """One target; True when it found nothing. Its output goes to <work>/<name>.log."""
    work.mkdir(parents=True, exist_ok=True)
    log = work / f"{name}.log"
    wrapper = work / f"{name}-target"  # argv[0] for libFuzzer's own re-runs (-merge)
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{TARGETS[name]["script"]}" "$@"\n')
    wrapper.chmod(0o755)
    env = {**env, "FUZZ_ARGV0": str(wrapper)}
    started = time.monotonic()
    with open(log, "w") as out:
        done = subprocess.run(command(name, seconds, files, work, merge), env=env, stdout=out,
                              stderr=subprocess.STDOUT, cwd=HERE.parent, check=False,
                              timeout=seconds + 120)
    text = log.read_text(errors="replace")
    runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)
    failed = done.returncode != 0 or FAILURE.search(text) is not None
    if merge:
        merged = re.search(r"MERGE-OUTER: (\d+) new files", text)
        failed = failed or merged is None
        runs = [f"merged {merged.group(1) if merged else 'no'} new"]
    took = time.monotonic() - started
    print(f"fuzz {name}: {'FAILED' if failed else 'ok'}, {runs[-1] if runs else '?'} inputs in "
          f"{took:.1f} s (exit {done.returncode}; log {log})", flush=True)
    if failed:  # what went wrong first (a sanitizer's report is long), then the end
        lines = text.splitlines()
        first = next((i for i, line in enumerate(lines) if FAILURE.search(line)), len(lines))
        shown = lines[max(0, first - 2):first + 30]
        rest = lines[first + 30:][-40:]
        print("\n".join(shown + (["..."] if rest else []) + rest), flush=True)
        for line in lines:
            if "Test unit written to" in line:
                print(f"fuzz {name}: failing input: {line.split('written to', 1)[1].strip()}")
    return not failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 300)),
                        help="per target (default: $FUZZ_SECONDS or 300)")
    parser.add_argument("--work", type=Path, default=build.OUT,
                        help="logs, new corpus inputs and failing inputs (default: build/fuzz)")
    parser.add_argument("--merge", action="store_true",
                        help="instead of fuzzing: merge the inputs a run found that add "
                             "coverage into fuzz/corpus/<target>/")
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help=f"{', '.join(TARGETS)} (default: {' '.join(DEFAULT)})")
    argv = sys.argv[1:] if argv is None else argv
    files = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"unknown target {unknown[0]!r} (choose from {', '.join(TARGETS)})")
    try:
        env = sanitizer_env()
        build.build_all()
    except (FuzzError, build.BuildError) as exc:
        print(f"fuzz: {exc}", file=sys.stderr)
        return 2
    work = args.work.resolve()
    results = [run(name, args.seconds, files, env, work, args.merge)
               for name in (args.targets or DEFAULT)]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
