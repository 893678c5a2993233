"""Fuzz target: the parser's C index (ASan + UBSan) against the Python reference parser.

``parse_message`` builds its message from ``index_message`` whenever that answers, and from the
reference ``_parse`` otherwise; ``auth_params`` stands in for ``parse_auth_value``. For every
input, as a datagram and as a stream: when the instrumented index answers, the message must equal
the reference parser's field for field (scan_fields.message_fields, as tests/unit/test_sip_index.py
checks), the reference must not reject it, and every credential header's split must agree. A
difference raises, and atheris saves the input as a crash.
Run through fuzz/run.py, which sets up the sanitizer runtime.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from instrumented import argv, load  # noqa: E402

# The parser imports the index by this name: it must find the instrumented build.
sys.modules["floodguard.sip._index"] = load("_index")

with atheris.instrument_imports(include=["floodguard"]):
    from floodguard.sip._index import auth_params, index_message
    from floodguard.sip.fields import decode_value, parse_auth_value
    from floodguard.sip.message import (
        SipParseError,
        _parse,
        parse_message,
    )
    from floodguard.sip.scan_fields import message_fields

AUTH_NAMES = (b"authorization", b"proxy-authorization", b"www-authenticate",
              b"proxy-authenticate")


class Mismatch(AssertionError):
    """The index and the reference parser disagree."""


def compare(data: bytes, stream: bool) -> None:
    if index_message(data, stream) is None:
        return
    try:
        want = _parse(data, stream)
    except SipParseError as exc:
        raise Mismatch(f"index answered (stream={stream}), the parser rejects ({exc})") from None
    got = parse_message(data, stream=stream)
    if message_fields(got, data) != message_fields(want, data):
        raise Mismatch(f"stream={stream}: index {message_fields(got, data)!r} != "
                       f"parser {message_fields(want, data)!r}")
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() in AUTH_NAMES:
            pairs = auth_params(value)
            want_pairs = parse_auth_value(decode_value(value))
            if pairs is not None and pairs != want_pairs:
                raise Mismatch(f"auth_params {pairs!r} != parser {want_pairs!r}")


def check(data: bytes) -> None:
    """One input as a datagram and as a stream; raises Mismatch on any disagreement."""
    compare(data, False)
    compare(data, True)


def main() -> None:
    atheris.Setup(argv(), check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
