"""The registrar's shortcuts give exactly what the general code gives.

Nonces made and checked with precomputed HMAC states agree with `digest.NonceFactory`; challenge
lines formatted from templates equal `digest.challenge_header`'s; the workers' quick look at a
datagram's username agrees with the parsed credentials (and a wrong guess is only an extra hop).
"""

import base64
import binascii
import random
import re
import string

import pytest

from floodguard.registrar.accounts import Account
from floodguard.registrar.auth import _MAC_LEN, Authenticator, _Nonces
from floodguard.registrar.workers import _USERNAME, owner_of
from floodguard.sip import build, digest
from floodguard.sip.message import parse_message


@pytest.mark.parametrize("secret", [b"s" * 32, b"a longer secret than one block" * 4])
@pytest.mark.parametrize("ip", ["192.0.2.7", "::ffff:192.0.2.7", "2001:db8::1", "not-an-ip"])
def test_nonces_match_the_reference_factory(ip, secret):
    assert _MAC_LEN == digest._MAC_LEN
    ours, reference = _Nonces(secret, 60), digest.NonceFactory(secret, 60)
    for maker, checker in ((ours, reference), (reference, ours)):
        nonce = maker.make(ip, 1000.0)
        assert checker.check(nonce, ip, 1000.5) is digest.NonceStatus.VALID
        assert checker.check(nonce, ip, 1061.0) is digest.NonceStatus.STALE
        assert checker.check(nonce, "198.51.100.1", 1000.5) is digest.NonceStatus.INVALID
        assert checker.check(nonce[:-1] + ("A" if nonce[-1] != "A" else "B"), ip, 1000.5) \
            is digest.NonceStatus.INVALID


@pytest.mark.parametrize("realm", ["floodguard", 'we "quote"', "back\\slash", "nul\0realm"])
@pytest.mark.parametrize("stale", [False, True])
def test_challenge_lines_equal_the_reference_format(realm, stale):
    auth = Authenticator(realm, {"1001": Account("1001", password="x")}, ("MD5", "SHA-256"),
                         b"k" * 32, 60, 0.0)
    lines = auth.challenge("192.0.2.7", 100.0, stale=stale)
    nonce = re.search(r'nonce="([A-Za-z0-9_-]+)"', lines[0]).group(1)
    assert lines == ["WWW-Authenticate: " + digest.challenge_header(realm, nonce, alg, stale=stale)
                     for alg in auth.challenged]


@pytest.mark.parametrize("user", ["1001", "alice", "bob.smith", "user+tag"])
def test_the_quick_username_look_agrees_with_the_parser(user):
    data = build.register("192.0.2.1", user=user, local="192.0.2.9:5060", call_id="c", cseq=2,
                          authorization=f'Digest username="{user}", realm="r", nonce="n", '
                                        'uri="sip:192.0.2.1", response="0"')
    found = _USERNAME.search(data)
    assert found is not None and found.group(1).decode() == user
    creds = parse_message(data).authorization
    assert creds is not None and creds.username == user
    assert owner_of(user, 3) == owner_of(found.group(1).decode(), 3)


def test_the_quick_look_finds_no_username_without_credentials():
    data = build.register("192.0.2.1", user="1001", local="192.0.2.9:5060", call_id="c", cseq=1)
    assert _USERNAME.search(data) is None
    # a "username" elsewhere (here in a header of its own) is not taken for credentials
    tricky = data.replace(b"Content-Length", b'X-Note: username="1002"\r\nContent-Length')
    assert _USERNAME.search(tricky) is None


# --- the nonce codec (binascii instead of the base64 module) ------------------------------


def _reference_decode(nonce: object) -> bytes | None:
    """The decoding the registrar used before: the base64 module, canonical spelling only."""
    if not isinstance(nonce, str) or len(nonce) != digest._NONCE_TEXT_LEN:
        return None
    text = nonce.encode("utf-8", "replace")
    if not frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                     ).issuperset(text):
        return None
    try:
        raw = base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != digest._NONCE_RAW_LEN or base64.urlsafe_b64encode(raw).rstrip(b"=") != text:
        return None
    return raw


def _nonce_variants(seed: int) -> list[object]:
    rng = random.Random(seed)
    good = digest.NonceFactory(b"s" * 32, 60).make("192.0.2.7", 1000.0 + seed)
    out: list[object] = [good, good[:-1], good + "A", None, b"x" * 43, 43, "", "=" * 43]
    alphabet = string.ascii_letters + string.digits + "-_+/=!. \n\0\xe9\u20ac"
    for _ in range(200):
        chars = list(good)
        for _ in range(rng.randint(1, 3)):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        out.append("".join(chars))
        out.append("".join(rng.choice(alphabet) for _ in range(43)))
    for last in string.ascii_letters + string.digits + "-_":  # every spelling of the last 6 bits
        out.append(good[:-1] + last)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_the_nonce_codec_equals_the_base64_module(seed):
    for nonce in _nonce_variants(seed):
        assert digest._decode_nonce(nonce) == _reference_decode(nonce), repr(nonce)
    rng = random.Random(seed)
    for _ in range(200):
        raw = rng.randbytes(digest._NONCE_RAW_LEN)
        text = digest._encode_nonce(raw)
        assert text == base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        assert digest._decode_nonce(text) == raw


def test_verify_gives_check_and_the_issue_time():
    factory = digest.NonceFactory(b"s" * 32, 60)
    nonce = factory.make("192.0.2.7", 1000.25)
    assert factory.verify(nonce, "192.0.2.7", 1000.5) == (digest.NonceStatus.VALID, 1000.25)
    assert factory.verify(nonce, "192.0.2.7", 1061.0) == (digest.NonceStatus.STALE, 1000.25)
    assert factory.verify(nonce, "192.0.2.8", 1000.5) == (digest.NonceStatus.INVALID, 0.0)
    assert factory.verify(nonce, "192.0.2.7", 999.0) == (digest.NonceStatus.INVALID, 0.0)
    assert factory.issued_at(nonce) == 1000.25
