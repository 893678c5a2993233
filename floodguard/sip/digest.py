"""HTTP digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760).

Pure helpers: hashing, response computation and constant-time verification, challenge and
Authorization header rendering, and `NonceFactory`, which issues self-contained HMAC-signed
nonces bound to the client's source address so that no per-nonce state has to be kept and a
proven authentication failure can be attributed to the address the nonce was issued to.
Time is always passed in by the caller.
"""

import binascii
import enum
import hashlib
import hmac
import os
import secrets
import socket
import struct
from collections.abc import Callable
from typing import Any

from floodguard.sip.message import DigestCredentials

__all__ = [
    "ALGORITHMS",
    "NonceFactory",
    "NonceStatus",
    "authorization_header",
    "challenge_header",
    "ha1",
    "hash_hex",
    "response",
    "verify",
]

ALGORITHMS = ("MD5", "SHA-256")

_HASHES = {
    "MD5": hashlib.md5,
    "MD5-SESS": hashlib.md5,
    "SHA-256": hashlib.sha256,
    "SHA-256-SESS": hashlib.sha256,
}


def _hasher(algorithm: str) -> Callable[..., Any]:
    try:
        return _HASHES[algorithm.upper()]
    except KeyError:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}") from None


def _is_sess(algorithm: str) -> bool:
    return algorithm.upper().endswith("-SESS")


def hash_hex(algorithm: str, data: str) -> str:
    """Hex digest of the UTF-8 encoding of `data` with the digest algorithm's hash."""
    return _hasher(algorithm)(data.encode("utf-8")).hexdigest()


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password); for "-sess" algorithms `response` derives the session key."""
    return hash_hex(algorithm, f"{username}:{realm}:{password}")


def response(
    algorithm: str,
    ha1: str,
    nonce: str,
    method: str,
    uri: str,
    *,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The request-digest.

    With qop "auth" (or "auth-int", which hashes `body` into HA2) this is RFC 2617/7616
    style and needs `nc` and `cnonce`; without qop it is the RFC 2069 form
    H(HA1:nonce:HA2).  Raises ValueError for an unknown algorithm or qop.
    """
    hasher = _hasher(algorithm)
    key = ha1
    if _is_sess(algorithm):
        key = hash_hex(algorithm, f"{ha1}:{nonce}:{cnonce or ''}")
    if qop is None or qop == "":
        ha2 = hash_hex(algorithm, f"{method}:{uri}")
        return hash_hex(algorithm, f"{key}:{nonce}:{ha2}")
    qop_l = qop.lower()
    if qop_l == "auth":
        ha2 = hash_hex(algorithm, f"{method}:{uri}")
    elif qop_l == "auth-int":
        ha2 = hash_hex(algorithm, f"{method}:{uri}:{hasher(body).hexdigest()}")
    else:
        raise ValueError(f"unsupported qop {qop!r}")
    return hash_hex(algorithm, f"{key}:{nonce}:{nc or ''}:{cnonce or ''}:{qop}:{ha2}")


def verify(
    algorithm: str, ha1: str, creds: DigestCredentials, method: str, *, body: bytes = b""
) -> bool:
    """True if `creds` carry the right response for `ha1` (computed with `algorithm`).

    The credentials' algorithm (absent means MD5) must match `algorithm`.  Checking that
    the nonce is one we issued, that `creds.uri` matches the request and that the username
    and realm are the expected ones is up to the caller.  Never raises.
    """
    claimed = creds.algorithm or "MD5"
    if claimed.upper() != algorithm.upper() or algorithm.upper() not in _HASHES:
        return False
    if not creds.response or creds.nonce is None or creds.uri is None:
        return False
    qop = creds.qop
    if qop:
        if qop.lower() not in ("auth", "auth-int") or not creds.nc or not creds.cnonce:
            return False
    elif _is_sess(algorithm):
        return False
    expected = response(
        algorithm,
        ha1,
        creds.nonce,
        method,
        creds.uri,
        qop=qop or None,
        nc=creds.nc,
        cnonce=creds.cnonce,
        body=body,
    )
    # Compare as bytes: compare_digest rejects non-ASCII str, and the response is untrusted.
    given = creds.response.strip().lower().encode("utf-8", "replace")
    return hmac.compare_digest(expected.encode("ascii"), given)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge_header(
    realm: str,
    nonce: str,
    algorithm: str,
    *,
    stale: bool = False,
    opaque: str | None = None,
    qop: str | None = "auth",
) -> str:
    """A WWW-Authenticate / Proxy-Authenticate value, e.g.
    `Digest realm="example.com", nonce="…", algorithm=MD5, qop="auth"`."""
    parts = [f"Digest realm={_quote(realm)}", f"nonce={_quote(nonce)}", f"algorithm={algorithm}"]
    if qop:
        parts.append(f"qop={_quote(qop)}")
    if opaque is not None:
        parts.append(f"opaque={_quote(opaque)}")
    if stale:
        parts.append("stale=true")
    return ", ".join(parts)


def authorization_header(
    username: str,
    password: str,
    realm: str,
    nonce: str,
    uri: str,
    method: str,
    *,
    algorithm: str = "MD5",
    qop: str | None = "auth",
    nc: int = 1,
    cnonce: str | None = None,
    opaque: str | None = None,
    body: bytes = b"",
) -> str:
    """Client side: an Authorization value answering a challenge.

    With a qop a random cnonce is generated unless one is given; `nc` is the nonce count.
    """
    key = ha1(algorithm, username, realm, password)
    parts = [
        f"Digest username={_quote(username)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
    ]
    if qop:
        nc_text = f"{nc:08x}"
        if cnonce is None:
            cnonce = secrets.token_hex(8)
        digest = response(
            algorithm, key, nonce, method, uri, qop=qop, nc=nc_text, cnonce=cnonce, body=body
        )
        parts.append(f"response={_quote(digest)}")
        parts.append(f"algorithm={algorithm}")
        parts.append(f"qop={qop}")
        parts.append(f"nc={nc_text}")
        parts.append(f"cnonce={_quote(cnonce)}")
    else:
        digest = response(algorithm, key, nonce, method, uri, cnonce=cnonce)
        parts.append(f"response={_quote(digest)}")
        parts.append(f"algorithm={algorithm}")
        if cnonce is not None:
            parts.append(f"cnonce={_quote(cnonce)}")
    if opaque is not None:
        parts.append(f"opaque={_quote(opaque)}")
    return ", ".join(parts)


class NonceStatus(enum.Enum):
    """Outcome of `NonceFactory.check`."""

    VALID = "valid"
    STALE = "stale"
    INVALID = "invalid"


_NONCE_HEADER = struct.Struct(">q8s")  # issue time in ms, random salt
_POOL_SIZE = 4096
_pool = b""
_pool_at = 0


def random_bytes(n: int) -> bytes:
    """`os.urandom(n)` read ahead in 4 KiB: one system call per 512 nonces rather than one each
    (the salt is public in the nonce, so buffering it reveals nothing). A forked child starts
    on a pool of its own."""
    global _pool, _pool_at
    if n > _POOL_SIZE:
        return os.urandom(n)
    at = _pool_at
    if at + n > len(_pool):
        _pool, at = os.urandom(_POOL_SIZE), 0
    _pool_at = at + n
    return _pool[at : at + n]


def _forget_pool() -> None:
    global _pool, _pool_at
    _pool, _pool_at = b"", 0


os.register_at_fork(after_in_child=_forget_pool)
_MAC_LEN = 16
_NONCE_RAW_LEN = _NONCE_HEADER.size + _MAC_LEN
_NONCE_TEXT_LEN = (_NONCE_RAW_LEN * 4 + 2) // 3  # unpadded base64
_B64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"


def _address_key(source_ip: str) -> bytes:
    """Packed address so that textual variants (and v4-mapped v6) of one address agree."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            packed = socket.inet_pton(family, source_ip)
        except (OSError, ValueError):
            continue
        if family == socket.AF_INET6 and packed[:12] == _V4_MAPPED:
            packed = packed[12:]
        return packed
    return b"?" + source_ip.encode("utf-8", "replace")


# base64url <-> standard base64 for binascii (which is several times cheaper than the base64
# module's Python wrappers); any byte outside the url alphabet becomes "!", which no standard
# encoding contains, so it can never survive the canonical comparison below.
_URL_TO_STD = bytes(
    c if c in _B64URL and c not in b"-_" else ord("+") if c == ord("-") else
    ord("/") if c == ord("_") else ord("!") for c in range(256))
_STD_TO_URL = bytes.maketrans(b"+/", b"-_")


def _encode_nonce(raw: bytes) -> str:
    """Unpadded base64url of `raw` (what `base64.urlsafe_b64encode(raw).rstrip(b"=")` gives)."""
    return binascii.b2a_base64(raw, newline=False).translate(_STD_TO_URL).rstrip(b"=").decode(
        "ascii")


def _decode_nonce(nonce: object) -> bytes | None:
    """Raw nonce bytes, or None unless `nonce` is exactly our canonical encoding."""
    if not isinstance(nonce, str) or len(nonce) != _NONCE_TEXT_LEN or not nonce.isascii():
        return None
    padded = nonce.encode("ascii").translate(_URL_TO_STD) + b"=" * (-_NONCE_TEXT_LEN % 4)
    try:
        raw = binascii.a2b_base64(padded)
    except (binascii.Error, ValueError):
        return None
    # Anything but the url alphabet (mapped to "!", skipped by the decoder) and the unused low
    # bits of the last character (several spellings decode alike) fail here: only the
    # canonical spelling of exactly one nonce is accepted, so a nonce string names one nonce.
    if len(raw) != _NONCE_RAW_LEN or binascii.b2a_base64(raw, newline=False) != padded:
        return None
    return raw


class NonceFactory:
    """Stateless nonces: base64url(issue-time || salt || HMAC-SHA256(secret, ... || address)).

    A nonce proves it was issued by us, when, and to which source address.  `check` says
    VALID, STALE (genuine, same address, older than `lifetime` seconds) or INVALID (forged,
    malformed, issued to another address, or dated in the future).
    """

    __slots__ = ("_secret", "_lifetime")

    def __init__(self, secret: bytes, lifetime: float) -> None:
        if not secret:
            raise ValueError("nonce secret must not be empty")
        if lifetime <= 0:
            raise ValueError("nonce lifetime must be positive")
        self._secret = bytes(secret)
        self._lifetime = float(lifetime)

    @property
    def lifetime(self) -> float:
        return self._lifetime

    def _mac(self, header: bytes, source_ip: str) -> bytes:
        mac = hmac.new(self._secret, header + _address_key(source_ip), hashlib.sha256)
        return mac.digest()[:_MAC_LEN]

    def make(self, source_ip: str, now: float) -> str:
        """A fresh nonce for `source_ip` issued at `now` (seconds, any epoch used consistently)."""
        header = _NONCE_HEADER.pack(int(now * 1000), random_bytes(8))
        return _encode_nonce(header + self._mac(header, source_ip))

    def check(self, nonce: object, source_ip: str, now: float) -> NonceStatus:
        """Classify a nonce presented by `source_ip` at `now`.  Never raises."""
        return self.verify(nonce, source_ip, now)[0]

    def verify(self, nonce: object, source_ip: str, now: float) -> tuple[NonceStatus, float]:
        """`check`, plus the issue time (seconds) of a VALID or STALE nonce (0.0 when INVALID),
        from one decoding.  Never raises."""
        raw = _decode_nonce(nonce)
        if raw is None:
            return NonceStatus.INVALID, 0.0
        header, mac = raw[: _NONCE_HEADER.size], raw[_NONCE_HEADER.size :]
        if not hmac.compare_digest(mac, self._mac(header, source_ip)):
            return NonceStatus.INVALID, 0.0
        issued_ms = int.from_bytes(header[:8], "big", signed=True)
        try:
            now_ms = int(now * 1000)
        except (ValueError, OverflowError, TypeError):
            return NonceStatus.INVALID, 0.0
        if issued_ms > now_ms:
            return NonceStatus.INVALID, 0.0
        if now_ms - issued_ms > self._lifetime * 1000:
            return NonceStatus.STALE, issued_ms / 1000.0
        return NonceStatus.VALID, issued_ms / 1000.0

    def issued_at(self, nonce: object) -> float | None:
        """Issue time (seconds) written in a nonce, unauthenticated; None if malformed."""
        raw = _decode_nonce(nonce)
        if raw is None:
            return None
        return _NONCE_HEADER.unpack(raw[: _NONCE_HEADER.size])[0] / 1000.0
