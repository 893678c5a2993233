"""One reading of a message: the C scan, the Python parser and the registrar agree where every
header line ends, and a control byte inside a header line makes the message malformed.

The attack this pins (issue 13, "bare CR"): a spoofed bare-LF REGISTER carrying
``Call-ID: x\\rWWW-Authenticate: Digest nonce="K"``. A registrar that echoes the Call-ID into
its CRLF reply and a reader that splits lines on CR too would "see" nonce K issued to the
victim. Every reader now rejects such a message, and no reply ever echoes a control byte.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from floodguard.registrar.accounts import Account
from floodguard.registrar.bindings import BindingTable
from floodguard.registrar.core import Registrar, Settings, Source
from floodguard.sip._scan import scan_sip
from floodguard.sip.message import SipParseError, parse_message

# Every control byte but HTAB, and CR/LF that do not form a line end.
CONTROLS = [bytes([c]) for c in (*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F) if c != 0x0D]
CONTROL_IN_LINE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def register(call_id: bytes = b"c1", eol: bytes = b"\r\n") -> bytes:
    lines = [
        b"REGISTER sip:10.0.0.1 SIP/2.0",
        b"Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK-1;rport",
        b"From: <sip:1001@10.0.0.1>;tag=f1",
        b"To: <sip:1001@10.0.0.1>",
        b"Call-ID: " + call_id,
        b"CSeq: 1 REGISTER",
        b"Contact: <sip:1001@192.0.2.10:5070>",
        b"Max-Forwards: 70",
        b"Content-Length: 0",
    ]
    return eol.join(lines) + eol + eol


@pytest.fixture(scope="module")
def registrar(tmp_path_factory: pytest.TempPathFactory) -> Registrar:
    path = str(Path(tmp_path_factory.mktemp("reg")) / "state.db")
    settings_ = Settings(state_path=path, accounts="", max_contacts=3, nonce_lifetime=30)
    table = BindingTable(path, now=1_800_000_000.0)
    return Registrar(settings_, {"1001": Account("1001", password="secret1001")}, table,
                     secret=b"k" * 32, started=1_799_999_999.0,
                     wall=lambda: 1_800_000_000.0, mono=lambda: 5000.0)


def answer(registrar: Registrar, data: bytes) -> bytes | None:
    return registrar.handle_datagram(data, Source("udp", "192.0.2.10", 5070, "udp:test"))


def header_block(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    assert end >= 0, data
    return data[:end]


def assert_clean_reply(reply: bytes | None) -> None:
    """A reply (if any) is CRLF-framed with no control byte inside any line, and every reader
    sees the same lines in it."""
    if reply is None:
        return
    for line in header_block(reply).split(b"\r\n"):
        assert not CONTROL_IN_LINE.search(line), reply
    parse_message(reply)


def test_the_planted_challenge_is_rejected_by_every_reader(registrar: Registrar) -> None:
    planted = register(b'x\rWWW-Authenticate: Digest realm="r", nonce="K"', eol=b"\n")
    with pytest.raises(SipParseError) as err:
        parse_message(planted)
    assert err.value.reason == "control_char"
    assert scan_sip(planted) is None
    reply = answer(registrar, planted)
    assert reply is not None and reply.startswith(b"SIP/2.0 400 ")
    assert b"WWW-Authenticate" not in reply and b"nonce=" not in reply
    assert_clean_reply(reply)


@pytest.mark.parametrize("byte", CONTROLS + [b"\r"], ids=lambda b: f"0x{b[0]:02x}")
def test_a_control_byte_in_a_header_value_is_malformed(registrar: Registrar, byte: bytes) -> None:
    data = register(b"c1" + byte + b"x")
    if byte == b"\n":
        # a bare LF ends the line (tolerated everywhere): "x" is then a line without a colon
        with pytest.raises(SipParseError):
            parse_message(data)
    else:
        with pytest.raises(SipParseError) as err:
            parse_message(data)
        assert err.value.reason == "control_char"
    assert scan_sip(data) is None
    assert_clean_reply(answer(registrar, data))


def test_crlf_and_bare_lf_line_ends_read_the_same() -> None:
    crlf, lf = parse_message(register()), parse_message(register(eol=b"\n"))
    for name in ("call-id", "via", "from", "to", "cseq", "contact"):
        assert crlf.header(name) == lf.header(name)
    assert scan_sip(register()) is not None


def test_control_bytes_in_the_body_are_not_header_bytes() -> None:
    body = b"v=0\r\x00binary\x7f"
    data = register().replace(b"Content-Length: 0", b"Content-Length: %d" % len(body)) + body
    assert parse_message(data).body == body


INSERTS = st.sampled_from([*CONTROLS, b"\r", b"\r\n", b"\n", b"\t", b" ", b":", b"\r\r\n"])


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), st.data())
def test_mutated_header_blocks_read_the_same_everywhere(
        registrar: Registrar, bare_lf: bool, data: st.DataObject) -> None:
    raw = bytearray(register(eol=b"\n" if bare_lf else b"\r\n"))
    end = len(raw) - (2 if bare_lf else 4)
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, end))
        raw[pos:pos] = data.draw(INSERTS)
        end = len(raw) - (2 if bare_lf else 4)
    message = bytes(raw)
    view = scan_sip(message)
    try:
        parsed = parse_message(message)
    except SipParseError:
        assert view is None, message
        parsed = None
    if parsed is not None:
        # what the parser accepted holds no control byte in any header value
        for name in ("call-id", "via", "from", "to", "cseq", "contact", "max-forwards"):
            for value in parsed.headers(name):
                assert not CONTROL_IN_LINE.search(value.encode()), (name, message)
        if view is not None:
            assert (view.call_id, view.cseq_num, view.aor) == (
                parsed.call_id, parsed.cseq_num, parsed.aor), message
    assert_clean_reply(answer(registrar, message))
