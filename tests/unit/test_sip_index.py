"""The parser's C index (floodguard.sip._index) against the Python parser it stands in for.

`parse_message` builds its message from `index_message` whenever that answers, and from the
reference parser `_parse` otherwise; `auth_params` stands in for `parse_auth_value`. Whenever
the C answers, every field of the message (and every auth item) must equal the Python result
for the same bytes, and it must never answer for input the parser rejects. Checked on a corpus,
on generated messages, on mutations (bare CR, NUL, odd case, compact forms, huge values, ...)
and on random bytes. The corpus also pins the shapes that must take the fast path, so an index
that quietly declines everything cannot pass.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from floodguard.sip._index import auth_params, index_message
from floodguard.sip.fields import decode_value, parse_auth_value
from floodguard.sip.message import (
    MAX_HEADER_LINE,
    MAX_HEADERS,
    SipParseError,
    _parse,
    parse_message,
)
from floodguard.sip.scan_fields import message_fields
from tests.unit.sip_corpus import DECLINED, FAST, PIECES, REGISTER, header, sip, start, values

AUTH_NAMES = (b"authorization", b"proxy-authorization", b"www-authenticate",
              b"proxy-authenticate")


def auth_agrees(raw: bytes) -> bool:
    """True when auth_params answered (and then equals the parser's split)."""
    pairs = auth_params(raw)
    if pairs is None:
        return False
    assert pairs == parse_auth_value(decode_value(raw)), raw
    return True


def agrees(data: bytes, stream: bool = False) -> bool:
    """True when the index answered (and then the message equals the reference parser's),
    False when it declined."""
    if index_message(data, stream) is None:
        return False
    try:
        want = _parse(data, stream)
    except SipParseError as exc:
        raise AssertionError(
            f"index answered for input the parser rejects ({exc}): {data!r}") from None
    got = parse_message(data, stream=stream)
    assert message_fields(got, data) == message_fields(want, data), data
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() in AUTH_NAMES:
            auth_agrees(value)
    return True


# Shapes the C index answers although the guard's scan declines them (the index reads no text).
INDEXED_TOO = {"escaped quote", "non-ascii to", "two authorization headers"} & set(DECLINED)
MORE_INDEXED = {
    "crlf crlf crlf": sip("REGISTER sip:x SIP/2.0", "Call-ID: c") + b"\r\n",
    "crlf crlf crlf and a zero length": sip("REGISTER sip:x SIP/2.0", "Content-Length: 0")
    + b"\r\n",
    "no header lines": b"REGISTER sip:x SIP/2.0\r\n\r\n",
    "repeated via": sip("REGISTER sip:x SIP/2.0", "Via: SIP/2.0/UDP a;branch=z9hG4bK1",
                        "via: SIP/2.0/UDP b", "Call-ID: c", "CSeq: 1 REGISTER"),
    "repeated cseq in another case": sip("REGISTER sip:x SIP/2.0", "CSeq: 1 REGISTER",
                                         "cseq: 2 REGISTER"),
    "repeated contact": sip("REGISTER sip:x SIP/2.0", "Contact: <sip:a@h>;expires=5",
                            "To: <sip:a@x>", "Contact: <sip:b@h>", "contact: *"),
}
MORE_DECLINED = {
    "bare cr": sip("REGISTER sip:x SIP/2.0", "Call-ID: c\rVia: SIP/2.0/UDP evil"),
    "bare cr at a line end": b"REGISTER sip:x SIP/2.0\r\nCall-ID: c\r\r\n\r\n",
    "repeated content-length": sip("REGISTER sip:x SIP/2.0", "Content-Length: 0",
                                   "content-length: 0"),
    "del byte": sip("REGISTER sip:x SIP/2.0", "Call-ID: c\x7f"),
    "too many headers": sip("REGISTER sip:x SIP/2.0",
                            *[f"X-{i}: v" for i in range(MAX_HEADERS + 1)]),
    "header line too long": sip("REGISTER sip:x SIP/2.0", "X: " + "a" * MAX_HEADER_LINE),
    "content-length too big": sip("REGISTER sip:x SIP/2.0", "Content-Length: 1000000"),
    "cseq over 2**31": sip("REGISTER sip:x SIP/2.0", "CSeq: 2147483648 REGISTER"),
    "cseq with three parts": sip("REGISTER sip:x SIP/2.0", "CSeq: 1 REGISTER x"),
    "no colon": sip("REGISTER sip:x SIP/2.0", "Call-ID c"),
    "four-part request line": sip("REGISTER sip:x SIP/2.0 x", "Call-ID: c"),
    "status code 700": sip("SIP/2.0 700 Odd", "Call-ID: c"),
}


@pytest.mark.parametrize("name", sorted(FAST))
def test_common_shapes_take_the_fast_path_and_agree(name: str) -> None:
    assert agrees(FAST[name]), f"{name}: the index declined a common message"
    assert agrees(FAST[name], stream=True)


@pytest.mark.parametrize("name", sorted(set(DECLINED) - INDEXED_TOO) + sorted(MORE_DECLINED))
def test_unusual_shapes_are_left_to_the_parser(name: str) -> None:
    data = DECLINED.get(name) or MORE_DECLINED[name]
    assert index_message(data, False) is None
    assert index_message(data, True) is None


@pytest.mark.parametrize("name", sorted(INDEXED_TOO) + sorted(MORE_INDEXED))
def test_text_and_repeats_the_guard_scan_declines_are_indexed(name: str) -> None:
    assert agrees(DECLINED.get(name) or MORE_INDEXED[name])


def test_index_of_a_register() -> None:
    msg = parse_message(REGISTER)
    assert (msg.method, msg.request_uri, msg.cseq_num, msg.cseq_method, msg.content_length,
            msg.length) == ("REGISTER", "sip:10.0.0.1", 2, "REGISTER", 0, len(REGISTER))
    creds = msg.authorization
    assert creds is not None
    assert (creds.username, creds.realm, creds.nc, creds.qop) == (
        "1001", "10.0.0.1", "00000001", "auth")


def test_body_and_stream_framing() -> None:
    data = sip("INVITE sip:x SIP/2.0", "Content-Length: 4", "Call-ID: c", body="abcdEXTRA")
    assert agrees(data) and agrees(data, stream=True)
    assert parse_message(data).body == b"abcd"
    no_length = sip("MESSAGE sip:x SIP/2.0", "Call-ID: c", body="hello")
    assert agrees(no_length) and agrees(no_length, stream=True)
    assert parse_message(no_length).body == b"hello"
    assert parse_message(no_length, stream=True).body == b""


@pytest.mark.parametrize("value", [
    b' Digest username="u", realm="r", nonce="n", uri="sip:x", response="ab", qop=auth, '
    b'nc=00000001, cnonce="c", algorithm=MD5',
    b'Digest username = "u" ,nonce= n1 ,, realm="r",Digest nonce="n2"',
    b'Digest nonce=a=b, stale=false, Basic realm="x"',
    b'realm="no scheme", Digest NONCE="x", nonce="second"',
    b'Digest nonce="unterminated',
    b"Digest",
    b"Basic QWxhZGRpbjpvcGVu",
    b'Digest USERNAME="U", Username="v"',
])
def test_auth_values_agree(value: bytes) -> None:
    assert auth_agrees(value)


@pytest.mark.parametrize("value", [b'Digest nonce="a\\"b"', 'Digest username="zoë"'.encode(),
                                   b"Digest " + b", ".join(b"k%d=v" % i for i in range(65))])
def test_auth_values_left_to_the_parser(value: bytes) -> None:
    assert auth_params(value) is None


def test_rejects_non_bytes() -> None:
    with pytest.raises(TypeError):
        index_message("REGISTER", False)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        auth_params("Digest")  # type: ignore[arg-type]


# ---------------------------------------------------------------- generated messages


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start, st.lists(header, max_size=10), st.booleans())
def test_generated_messages_agree(first: str, headers: list[str], stream: bool) -> None:
    agrees(sip(first, *headers), stream)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(FAST)), st.lists(values, min_size=1, max_size=3))
def test_common_shapes_with_awkward_values_agree(name: str, extra: list[str]) -> None:
    for value in extra:
        for field in ("To", "From", "Via", "Contact", "Authorization", "CSeq", "Expires",
                      "Content-Length", "v", "X-Huge"):
            text = value * 400 if field == "X-Huge" else value
            data = FAST[name].replace(b"Call-ID:", f"{field}: {text}\r\nCall-ID:".encode(), 1)
            agrees(data)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(FAST)), st.data())
def test_mutated_messages_agree(name: str, data: st.DataObject) -> None:
    raw = bytearray(FAST[name])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw)))
        what = data.draw(st.sampled_from([b"\r", b"\n", b"\r\n", b'"', b",", b";", b":", b" ",
                                          b"\t", b"\x00", b"\x7f", b"\xff", b"", b"9" * 12,
                                          b"SIP/2.0", b"sip/2.0", b"\r\n\r\n", b"x" * 9000]))
        cut = data.draw(st.integers(0, 3))
        raw[pos:pos + cut] = what
    agrees(bytes(raw), data.draw(st.booleans()))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_and_agree(data: bytes) -> None:
    agrees(data)
    agrees(b"REGISTER sip:x SIP/2.0\r\n" + data)
    auth_agrees(data)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30).map("".join))
def test_generated_auth_values_agree(value: str) -> None:
    auth_agrees(value.encode())
