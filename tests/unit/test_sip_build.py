"""floodguard.sip.build: what it writes parses back to what was asked, and its digest answers
verify with floodguard.sip.digest."""

from __future__ import annotations

import pytest

from floodguard.sip import build, digest
from floodguard.sip.message import DigestChallenge, parse_message


def challenge_401(*options: str) -> bytes:
    return build.response(401, via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bK1",
                          from_="<sip:1001@sip.test>;tag=a", to="<sip:1001@sip.test>;tag=b",
                          call_id="c1", cseq=1,
                          headers=[f"WWW-Authenticate: {o}" for o in options])


def test_register_round_trips_through_the_parser() -> None:
    data = build.register("sip.test", user="1001", local="192.0.2.10:5070", call_id="c1@x",
                          cseq=7, expires=600, user_agent="TestPhone/1.0", tag="t1",
                          branch="z9hG4bKabc", headers=["X-Extra: yes"])
    msg = parse_message(data)
    assert msg.method == "REGISTER" and msg.request_uri == "sip:sip.test"
    assert msg.via == "SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKabc;rport"
    assert msg.via_branch == "z9hG4bKabc" and msg.from_tag == "t1"
    assert msg.to_user == "1001" and msg.call_id == "c1@x"
    assert (msg.cseq_num, msg.cseq_method) == (7, "REGISTER")
    assert [c.uri for c in msg.contacts] == ["sip:1001@192.0.2.10:5070"]
    assert msg.expires == 600 and msg.user_agent == "TestPhone/1.0"
    assert msg.header("X-Extra") == "yes" and msg.content_length == 0
    assert msg.authorization is None
    assert data.endswith(b"\r\nContent-Length: 0\r\n\r\n")


def test_register_header_order_and_options() -> None:
    data = build.register("10.0.0.1", user="1001", local="10.0.0.2:5060", call_id="c",
                          cseq=1, aor_user="1002", domain="example.com", expires=None,
                          contacts=["*"], authorization="Digest x", rport=False, tag="t",
                          branch="z9hG4bKb", display="Bob")
    lines = data.decode().split("\r\n")
    assert lines[:9] == [
        "REGISTER sip:10.0.0.1 SIP/2.0",
        "Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKb",
        "Max-Forwards: 70",
        'From: "Bob" <sip:1002@example.com>;tag=t',
        'To: "Bob" <sip:1002@example.com>',
        "Call-ID: c",
        "CSeq: 1 REGISTER",
        "Contact: *",
        "Authorization: Digest x",
    ]
    assert not build.register("h", user="u", local="h:1", call_id="c", cseq=1,
                              contacts=()).count(b"Contact:")


def test_register_method_in_any_case_and_fresh_branches() -> None:
    data = build.register("h", user="u", local="h:1", call_id="c", cseq=3, method="ReGiStEr",
                          uri="sIp:h")
    assert data.startswith(b"ReGiStEr sIp:h SIP/2.0\r\n") and b"CSeq: 3 ReGiStEr\r\n" in data
    first, second = (parse_message(build.register("h", user="u", local="h:1", call_id="c",
                                                  cseq=1)).via_branch for _ in range(2))
    assert first != second and first is not None and first.startswith(build.BRANCH_MAGIC)


@pytest.mark.parametrize("transport", ["TCP", "TLS", "tcp"])
def test_stream_transports_in_the_via(transport: str) -> None:
    data = build.register("[2001:db8::1]:5060", user="1001", local="[2001:db8::2]:5092",
                          call_id="c", cseq=1, transport=transport, branch="z9hG4bKs",
                          domain="[2001:db8::1]")
    msg = parse_message(data)
    assert msg.via == f"SIP/2.0/{transport.upper()} [2001:db8::2]:5092;branch=z9hG4bKs;rport"
    assert msg.request_uri == "sip:[2001:db8::1]:5060"


def test_hostport_brackets_ipv6_once() -> None:
    assert build.hostport("2001:db8::1", 5060) == "[2001:db8::1]:5060"
    assert build.hostport("[2001:db8::1]") == "[2001:db8::1]"
    assert build.hostport("192.0.2.1", 5) == "192.0.2.1:5"


def test_options_and_request_round_trip() -> None:
    msg = parse_message(build.options("sip:100@10.0.0.1", local="10.0.0.2:5090",
                                      contact="<sip:100@10.0.0.2:5090>",
                                      user_agent="friendly-scanner", call_id="o1",
                                      headers=["Accept: application/sdp"]))
    assert msg.method == "OPTIONS" and msg.request_uri == "sip:100@10.0.0.1"
    assert msg.user_agent == "friendly-scanner" and msg.call_id == "o1"
    assert (msg.cseq_num, msg.cseq_method) == (1, "OPTIONS")
    assert msg.header("Accept") == "application/sdp" and msg.to_user == "100"
    body = b"v=0\r\n"
    invite = parse_message(build.request(
        "INVITE", "sip:1002@h", via="10.0.0.2:5060", from_uri="sip:1001@h",
        to_uri="sip:1002@h", call_id="i1", cseq=2, transport="TCP", body=body,
        headers=["Content-Type: application/sdp"]))
    assert invite.method == "INVITE" and invite.content_length == len(body)
    assert invite.via is not None and invite.via.startswith("SIP/2.0/TCP 10.0.0.2:5060;")


def test_reply_echoes_the_transaction_headers() -> None:
    request = build.options("sip:10000@10.201.0.10", local="10.200.0.1:5060", call_id="abc")
    raw = build.reply(request, headers=["Allow: OPTIONS"])
    assert raw is not None
    reply = parse_message(raw)
    assert reply.status == 200 and reply.call_id == "abc" and reply.cseq_method == "OPTIONS"
    assert reply.via == parse_message(request).via and reply.header("Allow") == "OPTIONS"
    assert build.reply(b"OPTIONS sip:x SIP/2.0\r\n\r\n") is None


def test_response_from_parts() -> None:
    msg = parse_message(challenge_401(digest.challenge_header("r", "n1", "MD5")))
    assert msg.status == 401 and msg.reason == "Unauthorized" and msg.call_id == "c1"
    assert [c.nonce for c in msg.challenges] == ["n1"]


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_answer_to_a_challenge_verifies(algorithm: str) -> None:
    header = digest.challenge_header("floodguard", "nonce-1", algorithm, opaque="op")
    uri = "sip:sip.test"
    auth = build.authorize(challenge_401(header), "1001", "secret", "REGISTER", uri, nc=3)
    request = parse_message(build.register("sip.test", user="1001", local="192.0.2.10:5070",
                                           call_id="c1", cseq=2, authorization=auth))
    creds = request.authorization
    assert creds is not None and creds.opaque == "op" and creds.nc == "00000003"
    assert creds.nonce == "nonce-1" and creds.uri == uri and creds.qop == "auth"
    key = digest.ha1(algorithm, "1001", "floodguard", "secret")
    assert digest.verify(algorithm, key, creds, "REGISTER")
    wrong = digest.ha1(algorithm, "1001", "floodguard", "other")
    assert not digest.verify(algorithm, wrong, creds, "REGISTER")


def test_authorize_picks_the_algorithm_asked_for() -> None:
    msg = challenge_401(digest.challenge_header("r", "n-md5", "MD5"),
                        digest.challenge_header("r", "n-sha", "SHA-256"))
    assert 'nonce="n-md5"' in build.authorize(msg, "u", "p", "REGISTER", "sip:h")
    sha = build.authorize(msg, "u", "p", "REGISTER", "sip:h", algorithm="sha-256")
    assert 'nonce="n-sha"' in sha and "algorithm=SHA-256" in sha
    with pytest.raises(ValueError):
        build.authorize(msg, "u", "p", "REGISTER", "sip:h", algorithm="SHA-512-256")
    with pytest.raises(ValueError):
        build.authorize(challenge_401(), "u", "p", "REGISTER", "sip:h")


def test_answer_follows_the_challenge() -> None:
    plain = DigestChallenge("Digest", realm="r", nonce="n", algorithm="SHA-512-256")
    auth = build.answer(plain, "u", "p", "REGISTER", "sip:h")
    assert "algorithm=MD5" in auth and "qop=" not in auth and "opaque" not in auth
    creds = parse_message(build.register("h", user="u", local="h:1", call_id="c", cseq=1,
                                         authorization=auth)).authorization
    assert creds is not None and digest.verify("MD5", digest.ha1("MD5", "u", "r", "p"), creds,
                                               "REGISTER")
    forged = build.answer(plain, "u", "p", "REGISTER", "sip:h", nonce="mine")
    assert 'nonce="mine"' in forged
    assert build.challenge_of(challenge_401('Digest realm="r"')) is None
