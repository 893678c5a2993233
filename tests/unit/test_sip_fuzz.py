"""Property tests: any bytes give a SipMessage or a SipParseError, never anything else."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from floodguard.sip import SipMessage, SipParseError, parse_message

SEEDS = [
    (
        b"REGISTER sip:example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
        b"Max-Forwards: 70\r\n"
        b'From: "Alice, A." <sip:alice@example.com>;tag=1928301774\r\n'
        b"To: <sip:alice@example.com>\r\n"
        b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
        b"CSeq: 2 REGISTER\r\n"
        b'Contact: <sip:alice@192.0.2.10:5060>;expires=60, "x" <sip:a@[2001:db8::1]>;q=0.5\r\n'
        b"Expires: 3600\r\n"
        b"User-Agent: Acme SoftPhone 1.2.3\r\n"
        b'Authorization: Digest username="alice", realm="example.com", nonce="abc", '
        b'uri="sip:example.com", response="6629fae49393a05397450978507c4ef1", '
        b'algorithm=MD5, qop=auth, nc=00000001, cnonce="0a\\"4f"\r\n'
        b"Content-Length: 0\r\n\r\n"
    ),
    (
        b"SIP/2.0 401 Unauthorized\r\n"
        b"v: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1, SIP/2.0/TCP h;branch=z9hG4bK2\r\n"
        b"f: <sip:alice@example.com>;tag=1\r\n"
        b"t: sip:alice@example.com;tag=2\r\n"
        b"i: c1\r\n"
        b"CSeq: 1 REGISTER\r\n"
        b'WWW-Authenticate: Digest realm="example.com", nonce="n1", algorithm=SHA-256, '
        b'qop="auth,auth-int", stale=TRUE, Digest realm="b", nonce="n2"\r\n'
        b'Proxy-Authenticate: Digest realm="p", nonce="n3", opaque=""\r\n'
        b"l: 0\r\n\r\n"
    ),
    (
        b"MESSAGE sip:bob@example.com SIP/2.0\n"
        b"Call-ID: lf\n"
        b"Subject: folded\n"
        b"  continuation\n"
        b"m: *\n"
        b"Content-Length: 5\n\n"
        b"hello"
        b"SIP/2.0 200 OK\r\n\r\n"
    ),
    b"\r\n\r\nOPTIONS sip:x SIP/2.0\r\nCSeq: 9 OPTIONS\r\n\r\n",
]

INSERTS = [b"\r", b"\n", b"\r\n", b"\r\n\r\n", b'"', b":", b",", b";", b"<", b">", b"\\",
           b" ", b"\t", b"=", b"\x00", b"\xff", b"\xc3", b"SIP/2.0", b"Content-Length: 9\r\n"]

ATTRIBUTES = [
    "is_request", "method", "request_uri", "status", "reason", "via", "via_branch",
    "from_uri", "from_user", "from_host", "from_tag", "to_uri", "to_user", "to_host", "to_tag",
    "aor", "call_id", "cseq_num", "cseq_method", "contacts", "expires", "granted_expires",
    "authorization", "challenges", "user_agent", "content_length", "body", "length",
]


def check(data: bytes, stream: bool) -> None:
    try:
        msg = parse_message(data, stream=stream)
    except SipParseError as exc:
        assert isinstance(exc.reason, str) and exc.reason
        return
    assert isinstance(msg, SipMessage)
    for name in ATTRIBUTES:
        getattr(msg, name)
    for name in ("via", "From", "to", "call-id", "contact", "authorization", "x-none"):
        msg.header(name)
        msg.headers(name)
    repr(msg)
    assert 0 < msg.length <= len(data)
    assert msg.body == data[msg.length - len(msg.body) : msg.length]
    assert msg.is_request == (msg.method is not None)
    if msg.content_length is not None:
        assert len(msg.body) == msg.content_length
        # What was consumed parses on its own to the same frame (TCP framing relies on it).
        again = parse_message(data[: msg.length], stream=stream)
        assert again.length == msg.length
        assert again.body == msg.body


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup_line", "random"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[pos:pos] = draw(st.sampled_from(INSERTS))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 20))]
        elif kind == "truncate":
            del data[pos:]
        elif kind == "dup_line":
            lines = bytes(data).split(b"\r\n")
            if len(lines) > 2:
                i = draw(st.integers(1, len(lines) - 2))
                lines.insert(i, lines[i])
                data = bytearray(b"\r\n".join(lines))
        else:
            data[pos:pos] = draw(st.binary(max_size=40))
    return bytes(data)


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=1500), st.booleans())
def test_random_bytes(data: bytes, stream: bool) -> None:
    check(data, stream)


@FUZZ
@given(st.binary(max_size=300).map(lambda b: b"REGISTER sip:x SIP/2.0\r\n" + b), st.booleans())
def test_random_headers_after_a_valid_start_line(data: bytes, stream: bool) -> None:
    check(data, stream)


@FUZZ
@given(mutated(), st.booleans())
def test_mutated_valid_messages(data: bytes, stream: bool) -> None:
    check(data, stream)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq",
                             "Contact", "m", "Expires", "Authorization", "WWW-Authenticate",
                             "Content-Length", "l", "User-Agent", "X-Other"]),
            st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"),
                    max_size=60),
        ),
        max_size=12,
    ),
    st.binary(max_size=30),
)
def test_structured_headers_with_random_values(headers: list[tuple[str, str]], body: bytes) -> None:
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    data = ("REGISTER sip:example.com SIP/2.0\r\n" + head + "\r\n").encode("utf-8") + body
    check(data, False)
    check(data, True)
