"""The SIP message parser (floodguard.sip.message) at its edges: framing by Content-Length
and over TCP streams, the size and count caps, and junk rejected with a reason."""


import pytest

from floodguard.sip import SipParseError, parse_message
from floodguard.sip.message import (
    MAX_HEADER_LINE,
    MAX_HEADERS,
    MAX_MESSAGE,
)
from tests.unit.test_sip_message import REGISTER, reason_of, sip

# --- framing: body, Content-Length, streams -----------------------------------------------


def test_body_by_content_length_and_trailing_bytes() -> None:
    first = sip("MESSAGE sip:a@b SIP/2.0", "Content-Length: 5", body=b"hello")
    second = sip("MESSAGE sip:a@b SIP/2.0", "Content-Length: 3", body=b"bye")
    msg = parse_message(first + second)
    assert msg.body == b"hello"
    assert msg.length == len(first)
    nxt = parse_message((first + second)[msg.length :])
    assert nxt.body == b"bye"
    assert nxt.length == len(second)


def test_without_content_length_body_is_the_rest_unless_stream() -> None:
    data = sip("MESSAGE sip:a@b SIP/2.0", "Call-ID: x", body=b"rest of datagram")
    assert parse_message(data).body == b"rest of datagram"
    assert parse_message(data).length == len(data)
    streamed = parse_message(data, stream=True)
    assert streamed.body == b""
    assert streamed.length == len(data) - len(b"rest of datagram")


def test_leading_crlf_is_skipped_and_counted() -> None:
    msg = parse_message(b"\r\n\r\n" + REGISTER)
    assert msg.method == "REGISTER"
    assert msg.length == len(REGISTER) + 4


@pytest.mark.parametrize("data", [b"", b"\r\n", b"\r\n\r\n", b"\n\n\n"])
def test_empty_and_keepalive(data: bytes) -> None:
    assert reason_of(data) == "empty"


def test_incomplete_without_blank_line() -> None:
    assert reason_of(b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n") == "incomplete"
    assert reason_of(b"REGISTER sip:exa") == "incomplete"
    assert reason_of(REGISTER[:-2]) == "incomplete"


def test_message_split_across_tcp_segments() -> None:
    data = sip("REGISTER sip:example.com SIP/2.0", "Call-ID: x", "Content-Length: 4", body=b"abcd")
    reasons = set()
    for cut in range(1, len(data)):
        with pytest.raises(SipParseError) as info:
            parse_message(data[:cut], stream=True)
        reasons.add(info.value.reason)
    assert reasons == {"incomplete", "truncated_body"}
    assert parse_message(data, stream=True).body == b"abcd"


def test_truncated_body() -> None:
    data = sip("MESSAGE sip:a@b SIP/2.0", "Content-Length: 100", body=b"0123456789")
    assert reason_of(data) == "truncated_body"


@pytest.mark.parametrize(
    "value", ["-1", "abc", "1e3", "0x10", "99999999999999999999999", "65537", "", "1 2", "+5",
              "1_0", "٣"]
)
def test_bad_content_length(value: str) -> None:
    data = sip("MESSAGE sip:a@b SIP/2.0", f"Content-Length: {value}", body=b"x" * 10)
    assert reason_of(data) == "bad_content_length"


def test_conflicting_content_lengths() -> None:
    data = sip("MESSAGE sip:a@b SIP/2.0", "Content-Length: 1", "l: 2", body=b"xx")
    assert reason_of(data) == "bad_content_length"
    same = sip("MESSAGE sip:a@b SIP/2.0", "Content-Length: 2", "l: 02", body=b"xx")
    assert parse_message(same).body == b"xx"


@pytest.mark.parametrize(
    "value", ["abc REGISTER", "1", "1 REGISTER extra", "-1 REGISTER", "99999999999 REGISTER",
              "2147483648 REGISTER", "1 REG/ISTER", ""]
)
def test_bad_cseq(value: str) -> None:
    assert reason_of(sip("REGISTER sip:a@b SIP/2.0", f"CSeq: {value}")) == "bad_cseq"


# --- caps ---------------------------------------------------------------------------------


def test_header_count_cap() -> None:
    ok = sip("OPTIONS sip:a@b SIP/2.0", *[f"X-H{i}: {i}" for i in range(MAX_HEADERS)])
    assert parse_message(ok).header("X-H0") == "0"
    too_many = sip("OPTIONS sip:a@b SIP/2.0", *[f"X-H{i}: {i}" for i in range(MAX_HEADERS + 1)])
    assert reason_of(too_many) == "too_many_headers"
    assert reason_of(too_many.replace(b"\r\n", b"\n")) == "too_many_headers"
    # Also recognised before the message is complete, so a TCP reader stops waiting.
    assert reason_of(too_many[:-4] + b"\r\n") == "too_many_headers"


def test_header_line_cap() -> None:
    value = "x" * (MAX_HEADER_LINE - len("X-Long: "))
    ok = sip("OPTIONS sip:a@b SIP/2.0", f"X-Long: {value}")
    assert len(parse_message(ok).header("X-Long") or "") == len(value)
    too_long = sip("OPTIONS sip:a@b SIP/2.0", f"X-Long: {value}x")
    assert reason_of(too_long) == "header_too_long"
    assert reason_of(too_long.replace(b"\r\n", b"\n")) == "header_too_long"
    assert reason_of(too_long[: MAX_HEADER_LINE + 200]) == "header_too_long"
    folded = sip("OPTIONS sip:a@b SIP/2.0", f"X-Long: {value[:5000]}", f" {value[:5000]}")
    assert reason_of(folded) == "header_too_long"


def test_message_size_cap() -> None:
    body_len = 60000
    near = sip("MESSAGE sip:a@b SIP/2.0", f"Content-Length: {body_len}", body=b"x" * body_len)
    assert len(parse_message(near).body) == body_len
    over = sip("MESSAGE sip:a@b SIP/2.0", "Content-Length: 65536", body=b"x" * 65536)
    assert reason_of(over) == "too_large"
    # Declared too large is known before the body arrives.
    assert reason_of(over[:200]) == "too_large"
    no_end = b"MESSAGE sip:a@b SIP/2.0\r\n" + b"X-A: b\r\n" * 9000
    assert len(no_end) > MAX_MESSAGE
    assert reason_of(no_end) in ("too_large", "too_many_headers")
    huge_datagram = sip("MESSAGE sip:a@b SIP/2.0", body=b"x" * MAX_MESSAGE)
    assert reason_of(huge_datagram) == "too_large"


def test_header_block_beyond_cap_without_terminator_is_too_large() -> None:
    data = b"MESSAGE sip:a@b SIP/2.0\r\n" + (b"X-A: " + b"b" * 8000 + b"\r\n") * 9
    assert reason_of(data + b"\r\n" + b"x" * MAX_MESSAGE) == "too_large"


# --- junk ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not_sip"),
        (b"\x00\x01\x02\x03", "not_sip"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "not_sip"),
        (b"hello world\r\n\r\n", "not_sip"),
        (b" REGISTER sip:x SIP/2.0\r\n\r\n", "not_sip"),
        (b"REGISTER sip:x SIP/3.0\r\n\r\n", "bad_start_line"),
        (b"REGISTER  sip:x SIP/2.0\r\n\r\n", "bad_start_line"),
        (b"REGISTER sip:x\r\n\r\n", "not_sip"),
        (b"REG(ISTER sip:x SIP/2.0\r\n\r\n", "bad_start_line"),
        (b"SIP/2.0 99 Too Low\r\n\r\n", "bad_start_line"),
        (b"SIP/2.0 700 Too High\r\n\r\n", "bad_start_line"),
        (b"SIP/2.0 2OO OK\r\n\r\n", "bad_start_line"),
        (b"SIP/1.0 200 OK\r\n\r\n", "bad_start_line"),
        (b"SIP/2.0\r\n\r\n", "bad_start_line"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", "not_sip"),
        (b"SIP/2.0 x\r\nVia: a\r\n", "bad_start_line"),
        (b"REGISTER sip:x SIP/2.0\r\nno colon here\r\n\r\n", "bad_header"),
        (b"REGISTER sip:x SIP/2.0\r\n: empty name\r\n\r\n", "bad_header"),
        (b"REGISTER sip:x SIP/2.0\r\nBad Name: x\r\n\r\n", "bad_header"),
        (b"REGISTER sip:x SIP/2.0\r\n continuation first\r\n\r\n", "bad_header"),
    ],
)
def test_junk_is_rejected_with_reason(data: bytes, reason: str) -> None:
    assert reason_of(data) == reason


def test_every_error_is_a_sip_parse_error_with_reason() -> None:
    err = SipParseError("bad_header", "detail")
    assert isinstance(err, ValueError)
    assert err.reason == "bad_header"
    assert "detail" in str(err)
