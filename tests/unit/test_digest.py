"""Tests for digest authentication helpers (floodguard.sip.digest)."""

import base64

import pytest

from floodguard.sip import parse_message
from floodguard.sip.digest import (
    ALGORITHMS,
    NonceFactory,
    NonceStatus,
    authorization_header,
    challenge_header,
    ha1,
    hash_hex,
    response,
    verify,
)
from floodguard.sip.message import DigestCredentials

# RFC 2617 section 3.5
RFC2617 = {
    "username": "Mufasa",
    "realm": "testrealm@host.com",
    "password": "Circle Of Life",
    "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
    "uri": "/dir/index.html",
    "method": "GET",
    "nc": "00000001",
    "cnonce": "0a4f113b",
    "response": "6629fae49393a05397450978507c4ef1",
}

# RFC 7616 section 3.9.1 (note the lower-case "of" in the password)
RFC7616 = {
    "username": "Mufasa",
    "realm": "http-auth@example.org",
    "password": "Circle of Life",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "uri": "/dir/index.html",
    "method": "GET",
    "nc": "00000001",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}


def test_algorithms() -> None:
    assert ALGORITHMS == ("MD5", "SHA-256")


def test_hash_hex() -> None:
    assert hash_hex("MD5", "") == "d41d8cd98f00b204e9800998ecf8427e"
    assert hash_hex("sha-256", "abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    with pytest.raises(ValueError):
        hash_hex("SHA-1", "x")


def test_rfc2617_md5_qop_auth() -> None:
    v = RFC2617
    key = ha1("MD5", v["username"], v["realm"], v["password"])
    assert key == "939e7578ed9e3c518a452acee763bce9"
    got = response("MD5", key, v["nonce"], v["method"], v["uri"], qop="auth", nc=v["nc"],
                   cnonce=v["cnonce"])
    assert got == v["response"]


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_vectors(algorithm: str) -> None:
    v = RFC7616
    key = ha1(algorithm, v["username"], v["realm"], v["password"])
    got = response(algorithm, key, v["nonce"], v["method"], v["uri"], qop="auth", nc=v["nc"],
                   cnonce=v["cnonce"])
    assert got == v[algorithm]


def test_rfc2069_style_without_qop() -> None:
    key = ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    expected = hash_hex("MD5", f"{key}:nonce:{hash_hex('MD5', 'GET:/x')}")
    assert response("MD5", key, "nonce", "GET", "/x") == expected


def test_sess_and_auth_int_variants() -> None:
    key = ha1("MD5", "u", "r", "p")
    sess_key = hash_hex("MD5", f"{key}:n:c")
    ha2 = hash_hex("MD5", "REGISTER:sip:r")
    assert response("MD5-sess", key, "n", "REGISTER", "sip:r", qop="auth", nc="00000001",
                    cnonce="c") == hash_hex("MD5", f"{sess_key}:n:00000001:c:auth:{ha2}")
    ha2_int = hash_hex("MD5", f"REGISTER:sip:r:{hash_hex('MD5', 'body')}")
    assert response("MD5", key, "n", "REGISTER", "sip:r", qop="auth-int", nc="00000001",
                    cnonce="c", body=b"body") == hash_hex(
        "MD5", f"{key}:n:00000001:c:auth-int:{ha2_int}"
    )
    with pytest.raises(ValueError):
        response("MD5", key, "n", "REGISTER", "sip:r", qop="bogus")


def creds_from(header_value: str) -> DigestCredentials:
    msg = parse_message(
        f"REGISTER sip:example.com SIP/2.0\r\nAuthorization: {header_value}\r\n\r\n".encode()
    )
    assert msg.authorization is not None
    return msg.authorization


@pytest.mark.parametrize(
    ("algorithm", "qop"),
    # session algorithms need a cnonce, which comes with qop
    [("MD5", "auth"), ("SHA-256", "auth"), ("MD5-sess", "auth"), ("SHA-256-sess", "auth"),
     ("MD5", None), ("SHA-256", None)],
)
def test_authorization_header_round_trips_through_parser_and_verify(
    algorithm: str, qop: str | None
) -> None:
    value = authorization_header("alice", "s3cret", "example.com", "n0nce", "sip:example.com",
                                 "REGISTER", algorithm=algorithm, qop=qop, nc=3, opaque="op")
    creds = creds_from(value)
    assert creds.username == "alice"
    assert creds.realm == "example.com"
    assert creds.opaque == "op"
    assert creds.algorithm == algorithm
    if qop:
        assert creds.nc == "00000003"
        assert creds.cnonce
    key = ha1(algorithm, "alice", "example.com", "s3cret")
    assert verify(algorithm, key, creds, "REGISTER")
    wrong = ha1(algorithm, "alice", "example.com", "guess")
    assert not verify(algorithm, wrong, creds, "REGISTER")
    assert not verify(algorithm, key, creds, "INVITE")


def test_verify_rfc2617_example_credentials() -> None:
    v = RFC2617
    creds = DigestCredentials(
        scheme="Digest", username=v["username"], realm=v["realm"], nonce=v["nonce"],
        uri=v["uri"], response=v["response"].upper(), qop="auth", nc=v["nc"], cnonce=v["cnonce"],
    )
    key = ha1("MD5", v["username"], v["realm"], v["password"])
    assert verify("MD5", key, creds, "GET")  # no algorithm param means MD5; hex case ignored
    assert not verify("SHA-256", key, creds, "GET")  # algorithm mismatch


@pytest.mark.parametrize(
    "change",
    [
        {"response": None},
        {"response": ""},
        {"response": "ümlaut-not-ascii"},
        {"nonce": None},
        {"uri": None},
        {"nc": None},
        {"cnonce": None},
        {"qop": "auth-conf"},
        {"algorithm": "SHA-512"},
        {"algorithm": "SHA-256"},
        {"nonce": "other"},
    ],
)
def test_verify_rejects_incomplete_or_altered_credentials(change: dict[str, str | None]) -> None:
    v = RFC2617
    creds = DigestCredentials(
        scheme="Digest", username=v["username"], realm=v["realm"], nonce=v["nonce"],
        uri=v["uri"], response=v["response"], algorithm="MD5", qop="auth", nc=v["nc"],
        cnonce=v["cnonce"],
    )
    key = ha1("MD5", v["username"], v["realm"], v["password"])
    assert verify("MD5", key, creds, "GET")
    assert not verify("MD5", key, creds._replace(**change), "GET")


def test_verify_unknown_server_algorithm_is_false_not_error() -> None:
    creds = DigestCredentials(scheme="Digest", response="x", nonce="n", uri="u", algorithm="X")
    assert not verify("X", "k", creds, "REGISTER")


def test_challenge_header_parses_back() -> None:
    value = challenge_header('exa"mple', "n1", "SHA-256", stale=True, opaque="o")
    assert value.startswith('Digest realm="exa\\"mple", nonce="n1", algorithm=SHA-256')
    msg = parse_message(
        f"SIP/2.0 401 Unauthorized\r\nWWW-Authenticate: {value}\r\n\r\n".encode()
    )
    (challenge,) = msg.challenges
    assert challenge.realm == 'exa"mple'
    assert challenge.nonce == "n1"
    assert challenge.algorithm == "SHA-256"
    assert challenge.qop == "auth"
    assert challenge.stale is True
    assert challenge.opaque == "o"


def test_challenge_header_defaults() -> None:
    expected = 'Digest realm="r", nonce="n", algorithm=MD5, qop="auth"'
    assert challenge_header("r", "n", "MD5") == expected
    assert "qop" not in challenge_header("r", "n", "MD5", qop=None)


# --- nonces -----------------------------------------------------------------------------------


@pytest.fixture
def factory() -> NonceFactory:
    return NonceFactory(b"0123456789abcdef0123456789abcdef", lifetime=30.0)


def test_nonce_is_quote_and_url_safe(factory: NonceFactory) -> None:
    nonce = factory.make("192.0.2.1", 1000.0)
    assert nonce.isascii()
    assert set(nonce) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert factory.issued_at(nonce) == 1000.0
    assert factory.make("192.0.2.1", 1000.0) != nonce  # random salt


def test_nonce_valid_and_stale(factory: NonceFactory) -> None:
    nonce = factory.make("192.0.2.1", 1000.0)
    assert factory.check(nonce, "192.0.2.1", 1000.0) is NonceStatus.VALID
    assert factory.check(nonce, "192.0.2.1", 1030.0) is NonceStatus.VALID
    assert factory.check(nonce, "192.0.2.1", 1030.5) is NonceStatus.STALE
    assert factory.check(nonce, "192.0.2.1", 10**9) is NonceStatus.STALE


def test_nonce_bound_to_source(factory: NonceFactory) -> None:
    nonce = factory.make("192.0.2.1", 1000.0)
    assert factory.check(nonce, "192.0.2.2", 1001.0) is NonceStatus.INVALID
    assert factory.check(nonce, "::ffff:192.0.2.1", 1001.0) is NonceStatus.VALID
    v6 = factory.make("2001:db8::1", 1000.0)
    assert factory.check(v6, "2001:0db8:0000::0001", 1001.0) is NonceStatus.VALID
    assert factory.check(v6, "2001:db8::2", 1001.0) is NonceStatus.INVALID
    odd = factory.make("not-an-ip", 1000.0)
    assert factory.check(odd, "not-an-ip", 1001.0) is NonceStatus.VALID
    assert factory.check(odd, "192.0.2.1", 1001.0) is NonceStatus.INVALID


def test_nonce_from_the_future_is_invalid(factory: NonceFactory) -> None:
    nonce = factory.make("192.0.2.1", 1000.0)
    assert factory.check(nonce, "192.0.2.1", 999.0) is NonceStatus.INVALID


def test_nonce_other_secret_is_invalid(factory: NonceFactory) -> None:
    other = NonceFactory(b"another secret", lifetime=30.0)
    nonce = other.make("192.0.2.1", 1000.0)
    assert factory.check(nonce, "192.0.2.1", 1001.0) is NonceStatus.INVALID


def test_tampered_nonce_is_invalid(factory: NonceFactory) -> None:
    nonce = factory.make("192.0.2.1", 1000.0)
    raw = bytearray(base64.urlsafe_b64decode(nonce + "="))
    for index in range(len(raw)):
        changed = bytearray(raw)
        changed[index] ^= 0x01
        forged = base64.urlsafe_b64encode(bytes(changed)).rstrip(b"=").decode()
        assert factory.check(forged, "192.0.2.1", 1001.0) is NonceStatus.INVALID
    # Re-dating a nonce (making it look fresh) breaks the signature too.
    redated = bytearray(raw)
    redated[:8] = int(2000 * 1000).to_bytes(8, "big")
    forged = base64.urlsafe_b64encode(bytes(redated)).rstrip(b"=").decode()
    assert factory.check(forged, "192.0.2.1", 2001.0) is NonceStatus.INVALID


def test_non_canonical_spelling_of_a_nonce_is_invalid(factory: NonceFactory) -> None:
    nonce = factory.make("192.0.2.1", 1000.0)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(nonce[-1])
    variant = nonce[:-1] + alphabet[last ^ 0x01]  # flips only an unused padding bit
    assert base64.urlsafe_b64decode(variant + "=") == base64.urlsafe_b64decode(nonce + "=")
    assert factory.check(variant, "192.0.2.1", 1001.0) is NonceStatus.INVALID


@pytest.mark.parametrize(
    "nonce",
    ["", "x", "!" * 43, "A" * 44, "é" * 43, "AAAA====" * 5 + "AAA", None, 12345],
)
def test_malformed_nonces_are_invalid(factory: NonceFactory, nonce: object) -> None:
    assert factory.check(nonce, "192.0.2.1", 1001.0) is NonceStatus.INVALID  # type: ignore[arg-type]
    assert factory.issued_at(nonce) is None  # type: ignore[arg-type]


def test_well_formed_but_unsigned_nonce_is_invalid(factory: NonceFactory) -> None:
    assert factory.check("A" * 43, "192.0.2.1", 1001.0) is NonceStatus.INVALID
    assert factory.issued_at("A" * 43) == 0.0  # issued_at does not authenticate


def test_check_with_unusable_time_is_invalid(factory: NonceFactory) -> None:
    nonce = factory.make("192.0.2.1", 1000.0)
    assert factory.check(nonce, "192.0.2.1", float("nan")) is NonceStatus.INVALID
    assert factory.check(nonce, "192.0.2.1", float("inf")) is NonceStatus.INVALID


def test_factory_validates_arguments() -> None:
    with pytest.raises(ValueError):
        NonceFactory(b"", 30.0)
    with pytest.raises(ValueError):
        NonceFactory(b"k", 0)
    assert NonceFactory(b"k", 5).lifetime == 5.0


def test_nonce_salts_are_read_ahead_but_never_repeat_across_a_fork() -> None:
    """The salt pool is refilled from os.urandom; a forked worker must not reuse its parent's
    bytes (two workers would then issue the same nonces to one source in the same ms)."""
    import os

    from floodguard.sip.digest import random_bytes

    first = [random_bytes(8) for _ in range(600)]  # crosses a pool refill (512 per 4 KiB)
    assert len(set(first)) == len(first)
    assert len(random_bytes(5000)) == 5000  # larger than the pool: read directly
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next salt
        try:
            os.write(write, random_bytes(8))
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 8)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 8
    assert child != random_bytes(8)
