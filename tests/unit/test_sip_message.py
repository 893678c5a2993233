"""Tests for the SIP message parser (floodguard.sip.message)."""

from collections.abc import Mapping
from typing import Any

import pytest

from floodguard.sip import SipMessage, SipParseError, parse_message
from floodguard.sip.message import (
    Contact,
    DigestChallenge,
    DigestCredentials,
)


def sip(*lines: str, body: bytes = b"", eol: str = "\r\n") -> bytes:
    """Join lines into a message; the blank line is added, Content-Length is not."""
    return (eol.join(lines) + eol + eol).encode("utf-8") + body


REGISTER = sip(
    "REGISTER sip:Example.com SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport",
    "Max-Forwards: 70",
    'From: "Alice" <sip:alice@example.com>;tag=1928301774',
    "To: <sip:alice@Example.COM:5060;transport=udp>",
    "Call-ID: a84b4c76e66710@pc33.example.com",
    "CSeq: 2 REGISTER",
    "Contact: <sip:alice@192.0.2.10:5060;transport=udp>;expires=1800",
    "Expires: 3600",
    "User-Agent: Acme SoftPhone 1.2.3",
    'Authorization: Digest username="alice", realm="example.com", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="sip:example.com", '
    'response="6629fae49393a05397450978507c4ef1", algorithm=MD5, qop=auth, '
    'nc=00000001, cnonce="0a4f113b", opaque="5ccc069c403ebaf9f0171e9517f40e41"',
    "Content-Length: 0",
)


def reason_of(data: bytes, **kwargs: bool) -> str:
    with pytest.raises(SipParseError) as info:
        parse_message(data, **kwargs)
    assert isinstance(info.value, ValueError)
    return info.value.reason


# --- a typical request --------------------------------------------------------------------


def test_register_fields() -> None:
    msg = parse_message(REGISTER)
    assert isinstance(msg, SipMessage)
    assert msg.is_request
    assert msg.method == "REGISTER"
    assert msg.request_uri == "sip:Example.com"
    assert msg.status is None and msg.reason is None
    assert msg.via == "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport"
    assert msg.via_branch == "z9hG4bK776asdhds"
    assert msg.from_uri == "sip:alice@example.com"
    assert msg.from_user == "alice"
    assert msg.from_host == "example.com"
    assert msg.from_tag == "1928301774"
    assert msg.to_uri == "sip:alice@Example.COM:5060;transport=udp"
    assert msg.to_user == "alice"
    assert msg.to_tag is None
    assert msg.aor == "alice@example.com"
    assert msg.call_id == "a84b4c76e66710@pc33.example.com"
    assert msg.cseq_num == 2
    assert msg.cseq_method == "REGISTER"
    assert msg.contacts == (
        Contact(
            uri="sip:alice@192.0.2.10:5060;transport=udp",
            expires=1800,
            star=False,
            raw="<sip:alice@192.0.2.10:5060;transport=udp>;expires=1800",
            params={"expires": "1800"},
        ),
    )
    assert msg.expires == 3600
    assert msg.granted_expires == 1800
    assert msg.user_agent == "Acme SoftPhone 1.2.3"
    assert msg.content_length == 0
    assert msg.body == b""
    assert msg.length == len(REGISTER)
    creds = msg.authorization
    assert isinstance(creds, DigestCredentials)
    assert creds.scheme == "Digest"
    assert creds.username == "alice"
    assert creds.realm == "example.com"
    assert creds.nonce == "dcd98b7102dd2f0e8b11d0f600bfb0c093"
    assert creds.uri == "sip:example.com"
    assert creds.response == "6629fae49393a05397450978507c4ef1"
    assert creds.algorithm == "MD5"
    assert creds.qop == "auth"
    assert creds.nc == "00000001"
    assert creds.cnonce == "0a4f113b"
    assert creds.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    assert creds.params["username"] == "alice"
    assert msg.challenges == ()


def test_message_is_read_only() -> None:
    msg = parse_message(REGISTER)
    with pytest.raises(AttributeError):
        msg.method = "INVITE"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        msg.call_id = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        msg.contacts[0].uri = "x"  # type: ignore[misc]


def test_repr_mentions_method_and_call_id() -> None:
    text = repr(parse_message(REGISTER))
    assert "REGISTER" in text and "a84b4c76e66710" in text


def test_generic_header_lookup() -> None:
    msg = parse_message(REGISTER)
    assert msg.header("max-forwards") == "70"
    assert msg.header("MAX-FORWARDS") == "70"
    assert msg.header("X-Missing") is None
    assert msg.headers("X-Missing") == []
    assert msg.headers("via") == [msg.via]
    assert msg.header("v") == msg.via
    assert msg.header("l") == "0"


def test_accepts_bytearray_and_memoryview() -> None:
    assert parse_message(bytearray(REGISTER)).call_id == parse_message(REGISTER).call_id
    assert parse_message(memoryview(REGISTER)).method == "REGISTER"


def test_rejects_non_bytes_with_type_error() -> None:
    with pytest.raises(TypeError):
        parse_message("REGISTER sip:x SIP/2.0\r\n\r\n")  # type: ignore[arg-type]


def test_missing_optional_headers_give_none() -> None:
    msg = parse_message(sip("OPTIONS sip:example.com SIP/2.0"))
    assert msg.via is None and msg.via_branch is None
    assert msg.from_uri is None and msg.from_user is None and msg.from_tag is None
    assert msg.to_uri is None and msg.aor is None
    assert msg.call_id is None and msg.cseq_num is None and msg.cseq_method is None
    assert msg.contacts == () and msg.expires is None and msg.granted_expires is None
    assert msg.authorization is None and msg.challenges == ()
    assert msg.user_agent is None and msg.content_length is None


# --- one message, a few fields -------------------------------------------------------------

# What the parser must read of one message each: an attribute path of the message
# ("authorization.username", "contacts.0.uri", "authorization.params.x-extra") or
# "header:<name>" for msg.header(name).
READS: dict[str, tuple[bytes, dict[str, object]]] = {
    "compact forms": (
        sip("REGISTER sip:example.com SIP/2.0", "v: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bKabc",
            "f: <sip:bob@example.com>;tag=99", "t: <sip:bob@example.com>", "i: call-1",
            "m: <sip:bob@192.0.2.1>;expires=60", "k: path", "c: application/sdp", "s: hello",
            "e: gzip", "CSeq: 7 REGISTER", "l: 0"),
        {"via_branch": "z9hG4bKabc", "from_tag": "99", "aor": "bob@example.com",
         "call_id": "call-1", "contacts.0.uri": "sip:bob@192.0.2.1", "granted_expires": 60,
         "content_length": 0, "header:Supported": "path",
         "header:content-type": "application/sdp", "header:Subject": "hello",
         "header:Content-Encoding": "gzip", "header:i": "call-1"}),
    "header names are case-insensitive": (
        sip("REGISTER sip:example.com SIP/2.0", "VIA: SIP/2.0/UDP h;branch=z9hG4bK1",
            "from: <sip:a@example.com>;TAG=x", "tO: <sip:a@example.com>", "cAlL-iD: abc",
            "cseq: 1 REGISTER", "CONTACT: <sip:a@h>", "user-AGENT: ua", "content-LENGTH: 0"),
        {"via_branch": "z9hG4bK1", "from_tag": "x", "call_id": "abc", "cseq_num": 1,
         "contacts.0.uri": "sip:a@h", "user_agent": "ua", "content_length": 0}),
    "lowercase method is upper-cased": (
        sip("register sip:example.com SIP/2.0", "CSeq: 1 register"),
        {"method": "REGISTER", "cseq_method": "REGISTER"}),
    "whitespace around colon and values": (
        sip("REGISTER sip:example.com SIP/2.0", "Call-ID  :   abc  ", "CSeq:1\tREGISTER"),
        {"call_id": "abc", "cseq_num": 1, "cseq_method": "REGISTER"}),
    "empty header value is allowed": (
        sip("OPTIONS sip:example.com SIP/2.0", "Supported:", "Call-ID: x"),
        {"header:Supported": "", "call_id": "x"}),
    "folded header lines are joined": (
        sip("REGISTER sip:example.com SIP/2.0", "Subject: I know you're there,",
            "   pick up the phone", "\tand talk to me!", "Call-ID: x"),
        {"header:Subject": "I know you're there, pick up the phone and talk to me!",
         "call_id": "x"}),
    "comma-separated via gives the top entry": (
        sip("SIP/2.0 200 OK",
            "Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKa, SIP/2.0/UDP h2;branch=z9hG4bKb"),
        {"via": "SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKa", "via_branch": "z9hG4bKa"}),
    "utf-8 values are decoded": (
        sip("REGISTER sip:example.com SIP/2.0", 'From: "Zoë Ünal" <sip:zoe@example.com>;tag=1'),
        {"header:From": '"Zoë Ünal" <sip:zoe@example.com>;tag=1', "from_user": "zoe"}),
    "to and from tags": (
        sip("SIP/2.0 200 OK", "From: Alice <sip:alice@example.com>;tag=abc;other=1",
            'To: "Bob" <sip:bob@example.com;tag=not-this>;tag=def'),
        {"from_tag": "abc", "to_tag": "def", "to_uri": "sip:bob@example.com;tag=not-this"}),
    "contact param beats the expires header": (
        sip("REGISTER sip:example.com SIP/2.0", "Contact: <sip:a@h>;EXPIRES=0", "Expires: 600"),
        {"granted_expires": 0}),
    "proxy-authorization is used when no authorization": (
        sip("INVITE sip:b@example.com SIP/2.0",
            'Proxy-Authorization: Digest username="p", nonce="n"'),
        {"authorization.username": "p"}),
    "authorization quoting and spacing": (
        sip("REGISTER sip:example.com SIP/2.0",
            'Authorization:   Digest  username = "a\\"l\\\\ice" ,realm="ex, ample",'
            'nonce="n1",uri="sip:example.com",response="r",algorithm = SHA-256 ,'
            "qop=auth,nc=00000002,cnonce=c1,x-extra=\"y\""),
        {"authorization.username": 'a"l\\ice', "authorization.realm": "ex, ample",
         "authorization.algorithm": "SHA-256", "authorization.nc": "00000002",
         "authorization.cnonce": "c1", "authorization.params.x-extra": "y"}),
    "authorization prefers the digest scheme": (
        sip("REGISTER sip:example.com SIP/2.0", "Authorization: Basic YWxpY2U6c2VjcmV0",
            'Authorization: Digest username="alice"'),
        {"authorization.scheme": "Digest", "authorization.username": "alice"}),
}


def read(msg: SipMessage, key: str) -> object:
    if key.startswith("header:"):
        return msg.header(key.removeprefix("header:"))
    value: Any = msg
    for part in key.split("."):
        if isinstance(value, Mapping):
            value = value[part]
        else:
            value = value[int(part)] if part.isdigit() else getattr(value, part)
    return value


@pytest.mark.parametrize("case", list(READS))
def test_fields_read_from_one_message(case: str) -> None:
    data, want = READS[case]
    msg = parse_message(data)
    assert {key: read(msg, key) for key in want} == want


# --- header names -----------------------------------------------------------------------


def test_repeated_headers_keep_order_and_first_wins() -> None:
    msg = parse_message(
        sip(
            "SIP/2.0 200 OK",
            "Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKtop",
            "v: SIP/2.0/UDP phone.example.com;branch=z9hG4bKsecond",
            "Via: SIP/2.0/UDP other;branch=z9hG4bKthird",
            "CSeq: 1 REGISTER",
        )
    )
    assert msg.via_branch == "z9hG4bKtop"
    assert msg.headers("Via") == [
        "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKtop",
        "SIP/2.0/UDP phone.example.com;branch=z9hG4bKsecond",
        "SIP/2.0/UDP other;branch=z9hG4bKthird",
    ]
    assert msg.headers("v") == msg.headers("via")


def test_bare_lf_line_endings() -> None:
    msg = parse_message(
        sip(
            "REGISTER sip:example.com SIP/2.0",
            "Call-ID: lf-only",
            "CSeq: 3 REGISTER",
            "Content-Length: 4",
            body=b"body",
            eol="\n",
        )
    )
    assert msg.call_id == "lf-only"
    assert msg.cseq_num == 3
    assert msg.body == b"body"


def test_bare_lf_blank_line_before_a_crlf_one_in_the_body() -> None:
    data = b"MESSAGE sip:a@b SIP/2.0\nCall-ID: x\nContent-Length: 6\n\nab\r\n\r\n"
    msg = parse_message(data)
    assert msg.body == b"ab\r\n\r\n"
    assert msg.length == len(data)


def test_invalid_utf8_is_replaced_not_raised() -> None:
    data = b"REGISTER sip:example.com SIP/2.0\r\nUser-Agent: \xff\xfe bad\r\n\r\n"
    assert parse_message(data).user_agent == "\ufffd\ufffd bad"


# --- addresses -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "uri", "user", "aor"),
    [
        ("<sip:alice@EXAMPLE.com>", "sip:alice@EXAMPLE.com", "alice", "alice@example.com"),
        ("sip:alice@example.com;tag=x", "sip:alice@example.com", "alice", "alice@example.com"),
        ("<sips:Bob@Example.com:5061>", "sips:Bob@Example.com:5061", "Bob", "Bob@example.com"),
        ("<sip:example.com>", "sip:example.com", None, "example.com"),
        ("<sip:carol:secret@example.com>", "sip:carol:secret@example.com", "carol",
         "carol@example.com"),
        ("<sip:dave@[2001:DB8::1]:5060>", "sip:dave@[2001:DB8::1]:5060", "dave",
         "dave@[2001:db8::1]"),
        ('"a <b>, \\"c\\"" <sip:eve@example.com>', "sip:eve@example.com", "eve",
         "eve@example.com"),
        ("<tel:+15551234567;phone-context=x>", "tel:+15551234567;phone-context=x", None,
         "+15551234567"),
        ("<sip:frank@example.com?Subject=hi>", "sip:frank@example.com?Subject=hi", "frank",
         "frank@example.com"),
    ],
)
def test_to_uri_user_and_aor(to: str, uri: str, user: str | None, aor: str) -> None:
    msg = parse_message(sip("REGISTER sip:example.com SIP/2.0", f"To: {to}"))
    assert msg.to_uri == uri
    assert msg.to_user == user
    assert msg.aor == aor


def test_garbage_addresses_do_not_crash() -> None:
    msg = parse_message(
        sip("REGISTER sip:x SIP/2.0", 'To: "unterminated <', "From: <", "Contact: ;;")
    )
    assert msg.aor is None or isinstance(msg.aor, str)
    assert msg.from_uri is None or isinstance(msg.from_uri, str)
    assert isinstance(msg.contacts, tuple)


# --- Contact and expiry -------------------------------------------------------------------


def test_multiple_and_comma_separated_contacts() -> None:
    msg = parse_message(
        sip(
            "REGISTER sip:example.com SIP/2.0",
            'Contact: "Smith, John" <sip:john@192.0.2.1;x=1,2>;expires=60, '
            "<sip:john@192.0.2.2>;expires=120",
            'Contact: sip:john@192.0.2.3;expires=30;+sip.instance="<urn:uuid:a,b>"',
            "Expires: 3600",
        )
    )
    assert [c.uri for c in msg.contacts] == [
        "sip:john@192.0.2.1;x=1,2",
        "sip:john@192.0.2.2",
        "sip:john@192.0.2.3",
    ]
    assert [c.expires for c in msg.contacts] == [60, 120, 30]
    assert msg.contacts[0].raw == '"Smith, John" <sip:john@192.0.2.1;x=1,2>;expires=60'
    assert msg.contacts[2].params["+sip.instance"] == "<urn:uuid:a,b>"
    assert not any(c.star for c in msg.contacts)
    assert msg.granted_expires == 120


def test_contact_star() -> None:
    msg = parse_message(sip("REGISTER sip:example.com SIP/2.0", "Contact: *", "Expires: 0"))
    assert len(msg.contacts) == 1
    assert msg.contacts[0].star
    assert msg.contacts[0].uri == "*"
    assert msg.contacts[0].expires is None
    assert msg.granted_expires == 0


def test_expires_header_used_when_no_contact_param() -> None:
    msg = parse_message(
        sip("REGISTER sip:example.com SIP/2.0", "Contact: <sip:a@h>", "Expires: 600")
    )
    assert msg.contacts[0].expires is None
    assert msg.expires == 600
    assert msg.granted_expires == 600


@pytest.mark.parametrize("value", ["abc", "-1", "", "1e3", "99999999999", "٣"])
def test_malformed_expires_is_none(value: str) -> None:
    msg = parse_message(
        sip("REGISTER sip:x SIP/2.0", f"Expires: {value}", f"Contact: <sip:a@h>;expires={value}")
    )
    assert msg.expires is None
    assert msg.contacts[0].expires is None
    assert msg.granted_expires is None


# --- authentication ----------------------------------------------------------------------


def test_malformed_authorization_never_raises() -> None:
    for value in ['Digest username="unterminated', "Digest ,,,==,", "Digest", '"', "\\", "=x"]:
        msg = parse_message(sip("REGISTER sip:x SIP/2.0", f"Authorization: {value}"))
        creds = msg.authorization
        assert creds is None or isinstance(creds, DigestCredentials)


def test_401_with_two_challenges() -> None:
    msg = parse_message(
        sip(
            "SIP/2.0 401 Unauthorized",
            "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK1;received=192.0.2.10",
            "From: <sip:alice@example.com>;tag=1",
            "To: <sip:alice@example.com>;tag=2",
            "Call-ID: c",
            "CSeq: 1 REGISTER",
            'WWW-Authenticate: Digest realm="example.com", nonce="n-sha", algorithm=SHA-256, '
            'qop="auth,auth-int", opaque="o1"',
            'WWW-Authenticate: Digest realm="example.com", nonce="n-md5", algorithm=MD5, '
            'qop="auth", stale=TRUE',
            "Content-Length: 0",
        )
    )
    assert not msg.is_request
    assert msg.method is None and msg.request_uri is None
    assert msg.status == 401 and msg.reason == "Unauthorized"
    assert msg.cseq_method == "REGISTER"
    assert msg.to_tag == "2"
    first, second = msg.challenges
    assert isinstance(first, DigestChallenge)
    assert (first.scheme, first.realm, first.nonce, first.algorithm) == (
        "Digest", "example.com", "n-sha", "SHA-256"
    )
    assert first.qop == "auth,auth-int"
    assert first.opaque == "o1"
    assert first.stale is False
    assert (second.nonce, second.algorithm, second.qop, second.stale) == (
        "n-md5", "MD5", "auth", True
    )


@pytest.mark.parametrize(("value", "stale"), [("true", True), ("TRUE", True), ('"true"', True),
                                               ("false", False), ("FALSE", False)])
def test_stale_flag(value: str, stale: bool) -> None:
    msg = parse_message(
        sip("SIP/2.0 407 Proxy Authentication Required",
            f'Proxy-Authenticate: Digest realm="r", nonce="n", stale={value}')
    )
    assert msg.challenges[0].stale is stale


def test_two_challenges_in_one_header_value() -> None:
    msg = parse_message(
        sip("SIP/2.0 401 Unauthorized",
            'WWW-Authenticate: Digest realm="a", nonce="1", Digest realm="b", nonce="2"')
    )
    assert [(c.realm, c.nonce) for c in msg.challenges] == [("a", "1"), ("b", "2")]


def test_200_with_contacts_and_403() -> None:
    ok = parse_message(
        sip(
            "SIP/2.0 200 OK",
            "Contact: <sip:a@192.0.2.1>;expires=3600, <sip:a@192.0.2.2>;expires=1200",
            "CSeq: 2 REGISTER",
            "Content-Length: 0",
        )
    )
    assert ok.status == 200 and ok.reason == "OK"
    assert len(ok.contacts) == 2
    assert ok.granted_expires == 3600
    forbidden = parse_message(sip("SIP/2.0 403 Forbidden", "CSeq: 3 REGISTER"))
    assert forbidden.status == 403 and forbidden.reason == "Forbidden"
    assert forbidden.challenges == ()


def test_status_line_without_reason() -> None:
    msg = parse_message(sip("SIP/2.0 100"))
    assert msg.status == 100 and msg.reason == ""
