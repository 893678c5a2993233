"""The proof-of-receipt token: minted into challenges, checked and removed from credentials."""

from __future__ import annotations

import struct

from floodguard.packet import _checksum, parse_packet, replace_udp_payload
from floodguard.sip.message import parse_message
from floodguard.sip.proof import ProofKey, check_credentials, tokenise
from tests.sipmsg import auth_value, register, response, udp

KEY = ProofKey(b"k" * 32)
CLIENT, OTHER = "198.51.100.7", "198.51.100.8"


def challenge(opaque: str | None = None) -> bytes:
    msg = response(401, "Unauthorized", "1001", call_id="c", cseq=1, challenge_nonce="N1")
    if opaque is not None:
        msg = msg.replace(b'nonce="N1"', b'nonce="N1", opaque="' + opaque.encode() + b'"')
    return msg


def answer(opaque: str | None, nonce: str = "N1") -> bytes:
    return register("1001", src=CLIENT, call_id="c", cseq=2,
                    auth=auth_value("1001", "pw", nonce, opaque=opaque))


def test_token_round_trip_restores_the_registrars_own_opaque() -> None:
    for original in (None, "reg-opaque-42"):
        sent = tokenise(challenge(original), CLIENT, KEY)
        assert sent is not None
        token = parse_message(sent).challenges[0].opaque
        assert token and token.startswith("fg1.")
        sent_answer = answer(token)
        proven, restored = check_credentials(sent_answer, CLIENT, KEY)
        assert proven
        if original is None:
            assert restored is None  # the registrar sent no opaque: it checks none, no rewrite
            continue
        assert restored is not None
        creds = parse_message(restored).authorization
        assert creds is not None and creds.opaque == original and creds.nonce == "N1"
        assert creds.response == parse_message(sent_answer).authorization.response


def test_a_token_proves_only_its_own_address_and_nonce() -> None:
    token = parse_message(tokenise(challenge(), CLIENT, KEY)).challenges[0].opaque
    for client, nonce in ((OTHER, "N1"), (CLIENT, "N2")):
        proven, stripped = check_credentials(answer(token, nonce), client, KEY)
        assert not proven and stripped is not None
        msg = parse_message(stripped)
        assert msg.authorization is None and msg.call_id == "c"  # the rest is kept
    assert not check_credentials(answer(token), CLIENT, ProofKey(b"x" * 32))[0]


def test_credentials_without_a_token_are_taken_out() -> None:
    for opaque in (None, "fg1.forged.-", "plain"):
        proven, stripped = check_credentials(answer(opaque), CLIENT, KEY)
        assert not proven and parse_message(stripped).authorization is None


def test_no_credentials_nothing_to_do() -> None:
    assert check_credentials(register("1001", src=CLIENT, call_id="c", cseq=1), CLIENT,
                             KEY) == (False, None)


def test_rewritten_packets_have_valid_lengths_and_checksums() -> None:
    for src, dst in (("192.0.2.1", CLIENT), ("2001:db8::1", "2001:db8::7")):
        packet = udp(src, dst, 5060, 5060, challenge())
        sip = tokenise(parse_packet(packet).payload, dst, KEY)
        out = replace_udp_payload(packet, sip)
        assert out is not None and parse_packet(out).payload == sip
        if ":" in src:
            pseudo = out[8:40] + struct.pack("!IxxxB", len(out) - 40, 17)
            assert _checksum(pseudo + out[40:]) == 0
        else:
            assert _checksum(out[:20]) == 0
            assert struct.unpack_from("!H", out, 2)[0] == len(out)
            pseudo = out[12:20] + struct.pack("!BBH", 0, 17, len(out) - 20)
            assert _checksum(pseudo + out[20:]) == 0
    big = udp("192.0.2.1", CLIENT, 5060, 5060, challenge())
    assert replace_udp_payload(big, b"x" * 1500) is None  # growing past the MTU bound


def test_a_cheap_look_finds_only_valid_tokens() -> None:
    from floodguard.sip.proof import CHECK, PROVEN, may_prove

    token = parse_message(tokenise(challenge(), CLIENT, KEY)).challenges[0].opaque
    # a token alone, with no opaque of the registrar's inside: proven as it stands
    assert may_prove(answer(token), CLIENT, "N1", KEY) == PROVEN
    assert may_prove(answer(token).replace(b"opaque=", b"OPAQUE ="), CLIENT, "N1", KEY) == PROVEN
    # the registrar's own opaque rides inside: it must be put back, so parse and rewrite
    theirs = parse_message(tokenise(challenge("abc"), CLIENT, KEY)).challenges[0].opaque
    assert may_prove(answer(theirs), CLIENT, "N1", KEY) == CHECK
    # a second credentials field (here: without a token) must be checked too
    two = answer(token).replace(b"\r\nAuthorization:", b"\r\nProxy-Authorization: Digest "
                                b'username="x", nonce="N1"\r\nAuthorization:', 1)
    assert may_prove(two, CLIENT, "N1", KEY) == CHECK
    assert check_credentials(two, CLIENT, KEY)[0] is False
    assert not may_prove(answer(token), OTHER, "N1", KEY)  # someone else's token
    assert not may_prove(answer(token), CLIENT, "N2", KEY)  # for another nonce
    assert not may_prove(answer("fg1.forged.-"), CLIENT, "N1", KEY)
    assert not may_prove(answer(None), CLIENT, "N1", KEY)
