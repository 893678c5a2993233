"""Fuzz target: the C SIP scan (ASan + UBSan) against the Python parsers it stands in for.

Every input goes to ``scan_sip`` and ``scan_packet``. Whenever one answers, each field must equal
what ``parse_message`` / ``parse_packet`` give for the same bytes (the differential check of
tests/unit/test_sip_scan.py, on the same fields: floodguard/sip/scan_fields.py); a difference
raises, and atheris saves the input as a crash.
Run through fuzz/run.py, which sets up the sanitizer runtime.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

with atheris.instrument_imports(include=["floodguard"]):
    from floodguard.packet import parse_packet
    from floodguard.sip.message import SipParseError, parse_message
    from floodguard.sip.scan_fields import packet_fields, sip_fields

from instrumented import argv, load  # noqa: E402

scan = load("_scan")


class Mismatch(AssertionError):
    """The scan and the parser disagree."""


def compare_sip(data: bytes, view: object, what: str) -> None:
    try:
        want = sip_fields(parse_message(data))
    except SipParseError as exc:
        raise Mismatch(f"{what}: the scan answered, the parser rejects ({exc})") from None
    got = sip_fields(view)
    if got != want:
        raise Mismatch(f"{what}: scan {got!r} != parser {want!r}")


def check(data: bytes) -> None:
    """One input through both entry points; raises Mismatch on any disagreement."""
    view = scan.scan_sip(data)
    if view is not None:
        compare_sip(data, view, "scan_sip")
    fast = scan.scan_packet(data)
    if fast is not None:
        pkt = parse_packet(data)
        if pkt is None:
            raise Mismatch("scan_packet answered, parse_packet declines")
        head = packet_fields(pkt)
        if tuple(fast[:5]) != head:
            raise Mismatch(f"scan_packet {fast[:5]!r} != parse_packet {head!r}")
        compare_sip(pkt.payload, fast[5], "scan_packet")


def main() -> None:
    atheris.Setup(argv(), check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
