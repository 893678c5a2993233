"""A short slice of the fuzzers (``make fuzz`` runs them for minutes): fails on any crash,
sanitizer report or differential mismatch, and loudly when clang or atheris is missing.

The slice runs the real fuzz/run.py: the SIP scan, the NFQUEUE binding's datagram parsing and
the parser's C index, built with ASan+UBSan, a few seconds each from the committed corpus.
The canary checks prove that the same setup reports a read past a bytes object, undefined
behaviour and a mismatch, so a slice that passes is a slice that could have failed.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from floodguard.packet import parse_packet
from floodguard.sip._scan import scan_packet, scan_sip

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "fuzz" / "run.py"
SLICE_SECONDS = 5  # per target


def fuzz(tmp_path: Path, *args: str, timeout: float = 180) -> tuple[int, str]:
    done = subprocess.run([sys.executable, str(RUN), "--work", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)
    return done.returncode, done.stdout + done.stderr


def test_tools_are_installed() -> None:
    assert shutil.which("clang"), "clang is missing: run `sudo make deps`"
    assert importlib.util.find_spec("atheris"), "atheris is missing: run `make deps`"


def test_a_slice_of_every_fuzzer_finds_nothing(tmp_path: Path) -> None:
    rc, out = fuzz(tmp_path, "--seconds", str(SLICE_SECONDS), "scan", "nfq", "index")
    assert rc == 0, out
    for target in ("scan", "nfq", "index"):
        assert f"fuzz {target}: ok" in out, out
        runs = int(out.split(f"fuzz {target}: ok, ", 1)[1].split(" ", 1)[0])
        assert runs > 1000, f"{target}: only {runs} inputs in {SLICE_SECONDS} s"


@pytest.mark.parametrize(("planted", "report"), [
    (b"A-overread", "AddressSanitizer: heap-buffer-overflow"),
    (b"U-overflow", "runtime error: signed integer overflow"),
    (b"M-mismatch", "Mismatch: planted"),
])
def test_the_slice_reports_each_kind_of_failure(tmp_path: Path, planted: bytes,
                                                report: str) -> None:
    crash = tmp_path / "input"
    crash.write_bytes(planted)
    rc, out = fuzz(tmp_path, "canary", "--", str(crash), timeout=60)
    assert rc == 1 and "fuzz canary: FAILED" in out, out
    assert report in out, out


def test_the_seed_corpus_reaches_the_fast_path() -> None:
    """The differential check only bites where the scan answers: the common shapes do, alone
    and inside IPv4/IPv6 UDP/TCP packets."""
    seeds = {p.name.rsplit("-", 1)[0]: p.read_bytes()
             for p in (ROOT / "fuzz" / "corpus" / "scan").iterdir()}
    for shape in ("register-first", "register-md5", "401-kamailio", "401-stale-fast",
                  "200-two-contacts-fast", "403", "407-proxy", "options", "invite-body"):
        assert scan_sip(seeds[shape]) is not None, f"{shape}: the scan declined its seed"
    for shape in ("register-first", "register-md5", "401-stale-fast", "200-two-contacts-fast"):
        for head in ("v4-udp", "v4-tcp", "v6-udp", "v6-tcp"):
            data = seeds[f"{head}-{shape}"]
            assert scan_packet(data) is not None, f"{head}-{shape}: the scan declined"
            assert parse_packet(data) is not None
