"""The registrar's shortcuts give exactly what the general code gives.

Nonces made and checked with precomputed HMAC states agree with `digest.NonceFactory`; challenge
lines formatted from templates equal `digest.challenge_header`'s; the workers' quick look at a
datagram's username agrees with the parsed credentials (and a wrong guess is only an extra hop).
"""

import re

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
