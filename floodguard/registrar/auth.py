"""Digest challenge and verification for the registrar (RFC 3261 §22, RFC 7616, RFC 8760).

Nonces are stateless (HMAC-signed, time-limited, bound to the source address, see
`floodguard.sip.digest.NonceFactory`); the only state is the highest nonce-count accepted per
nonce, so a replayed request is refused. That table is bucketed by the nonce's issue time and a
bucket is dropped once every nonce in it is stale, which bounds it by rate x lifetime.

Nothing about an account shows before authentication: every challenge offers the same
algorithms whoever it is for (the registrar's `algorithms`, then any algorithm some account
is limited to that the list lacks), unknown users are verified against a random dummy HA1, and an
answer with an algorithm the account does not allow is verified against the dummy too, so all of
them produce the same 401 as a wrong password after the same amount of work.
"""

from __future__ import annotations

import enum
import hashlib
import os
from collections.abc import Mapping

from floodguard.registrar.accounts import Account
from floodguard.sip import digest
from floodguard.sip.message import SipMessage

_HEX8 = frozenset("0123456789abcdefABCDEF")
_MAC_LEN = 16  # digest.NonceFactory's truncated HMAC-SHA256 (checked by the tests)


class _Nonces(digest.NonceFactory):
    """`digest.NonceFactory` with the same MAC (HMAC-SHA256, RFC 2104) computed from SHA-256
    states keyed once: copying them costs a third of `hmac.digest`, which looks the algorithm
    up in OpenSSL on every call. The packed source address is remembered too."""

    __slots__ = ("_keys", "_inner", "_outer")

    def __init__(self, secret: bytes, lifetime: float) -> None:
        super().__init__(secret, lifetime)
        self._keys: dict[str, bytes] = {}
        block = self._secret if len(self._secret) <= 64 else hashlib.sha256(self._secret).digest()
        block = block.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))

    def _mac(self, header: bytes, source_ip: str) -> bytes:
        key = self._keys.get(source_ip)
        if key is None:
            if len(self._keys) >= 65536:
                self._keys.clear()
            key = self._keys[source_ip] = digest._address_key(source_ip)
        inner = self._inner.copy()
        inner.update(header + key)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:_MAC_LEN]


class AuthResult(enum.Enum):
    """What a REGISTER's credentials amounted to; everything but OK is answered 401."""

    OK = "ok"
    MISSING = "missing"  # no usable Digest credentials: plain challenge
    BAD_NONCE = "bad_nonce"  # forged, malformed or issued to another address
    STALE = "stale"  # right password, expired nonce: challenge with stale=true
    FAILED = "failed"  # wrong response (wrong password, unknown user or algorithm not allowed)
    REPLAY = "replay"  # nonce-count not above one already accepted


class NonceCounter:
    """Highest accepted nonce-count per nonce, bucketed by issue time, bounded in size.

    Buckets are a quarter of the nonce lifetime wide. When the cap is reached the oldest bucket
    is dropped and everything issued before the end of it counts as forgotten: `forgotten`
    then says so and the caller answers stale, so dropping state never reopens a replay.
    """

    __slots__ = ("_lifetime", "_width", "_cap", "_buckets", "_size", "_floor")

    def __init__(self, lifetime: float, cap: int = 1_000_000) -> None:
        self._lifetime = max(float(lifetime), 1.0)
        self._width = self._lifetime / 4
        self._cap = max(1, cap)
        self._buckets: dict[int, dict[str, int]] = {}
        self._size = 0
        self._floor = float("-inf")

    def __len__(self) -> int:
        return self._size

    def forgotten(self, issued: float) -> bool:
        """True when the counts of a nonce issued at `issued` may have been dropped."""
        return issued < self._floor

    def accept(self, nonce: str, issued: float, nc: int, now: float) -> bool:
        """Record `nc` for `nonce` if it is higher than any accepted before; False = replay."""
        index = int(issued // self._width)
        bucket = self._buckets.get(index)
        last = 0 if bucket is None else bucket.get(nonce, 0)
        if nc <= last:
            return False
        if not last:
            if bucket is None:
                self.prune(now)
            while self._size >= self._cap and self._buckets:
                self._drop_oldest(now)
            bucket = self._buckets.get(index)
            if bucket is None:
                bucket = self._buckets[index] = {}
            self._size += 1
        bucket[nonce] = nc  # type: ignore[index]
        return True

    def prune(self, now: float) -> None:
        """Forget buckets whose nonces are all older than the lifetime (they are stale)."""
        floor = int((now - self._lifetime) // self._width)
        for index in [i for i in self._buckets if i < floor]:
            self._size -= len(self._buckets.pop(index))

    def _drop_oldest(self, now: float) -> None:
        # Only reachable with more authenticated requests per lifetime than the cap allows.
        oldest = min(self._buckets)
        self._size -= len(self._buckets.pop(oldest))
        self._floor = max(self._floor, min(now, (oldest + 1) * self._width))


class Authenticator:
    """Challenges and checks REGISTER credentials against the accounts."""

    def __init__(
        self,
        realm: str,
        accounts: Mapping[str, Account],
        algorithms: tuple[str, ...],
        secret: bytes,
        nonce_lifetime: float,
        not_before: float,
    ) -> None:
        self.realm = realm
        self.algorithms = tuple(algorithms)
        self._nonces: digest.NonceFactory = _Nonces(secret, nonce_lifetime)
        # Nonces issued before this process started are treated as stale: their counts were
        # lost with the old process, so accepting them could let a replay through.
        self._not_before = int(not_before * 1000) / 1000.0  # nonces carry whole milliseconds
        self._counter = NonceCounter(nonce_lifetime)
        self._dummy = {alg: os.urandom(32).hex()[: 32 if alg == "MD5" else 64]
                       for alg in digest.ALGORITHMS}
        self._ha1: dict[str, dict[str, str]] = {}
        self._challenged: tuple[str, ...] = self.algorithms
        self.set_accounts(accounts)

    def set_accounts(self, accounts: Mapping[str, Account]) -> None:
        """Install a (re)loaded accounts table; HA1s of plaintext passwords are precomputed."""
        table: dict[str, dict[str, str]] = {}
        # One challenge set for everyone, so it cannot tell accounts apart: the configured
        # order, plus what an account limited to other algorithms needs to log in at all.
        challenged = list(self.algorithms)
        for user, account in accounts.items():
            algs = account.offered(self.algorithms)
            keys: dict[str, str] = {}
            for alg in algs:
                stored = account.stored_ha1(alg)
                if stored is None and account.password is not None:
                    stored = digest.ha1(alg, user, self.realm, account.password)
                if stored is not None:
                    keys[alg] = stored
            table[user] = keys
            challenged.extend(a for a in algs if a not in challenged)
        self._ha1, self._challenged = table, tuple(challenged)
        # The challenge lines around the nonce, formatted once (nonces are base64url: nothing
        # in them needs quoting, so the result equals digest.challenge_header's).
        self._templates: dict[bool, list[list[str]]] = {
            stale: [("WWW-Authenticate: " + digest.challenge_header(
                self.realm, "\0", alg, stale=stale)).split('"\0"') for alg in self._challenged]
            for stale in (False, True)
        }
        if any(len(parts) != 2 for lines in self._templates.values() for parts in lines):
            self._templates = {}  # a realm holding the marker: format each challenge in full

    def known(self, user: str | None) -> bool:
        """Whether `user` has an account (for authenticated callers only: see the docstring)."""
        return user is not None and user in self._ha1

    @property
    def nonce_counts(self) -> int:
        return len(self._counter)

    @property
    def challenged(self) -> tuple[str, ...]:
        """The algorithms every challenge offers, in order (the same for every user)."""
        return self._challenged

    def challenge(self, source_ip: str, now: float, *, stale: bool = False) -> list[str]:
        """WWW-Authenticate header lines, one per algorithm in order, sharing one nonce.

        Deliberately not per user: a per-account list here would tell who exists.
        """
        nonce = self._nonces.make(source_ip, now)
        templates = self._templates.get(stale)
        if templates is not None:
            quoted = f'"{nonce}"'
            return [quoted.join(parts) for parts in templates]
        return [
            "WWW-Authenticate: " + digest.challenge_header(self.realm, nonce, alg, stale=stale)
            for alg in self._challenged
        ]

    def check(self, msg: SipMessage, source_ip: str, now: float) -> tuple[AuthResult, str | None]:
        """Verify the request's credentials (any method: the digest covers it); returns the
        result and the digest username."""
        creds = msg.authorization
        if creds is None or creds.scheme.lower() != "digest":
            return AuthResult.MISSING, None
        username = creds.username
        nonce = creds.nonce
        if (
            not username
            or creds.realm != self.realm
            or not nonce
            or not creds.response
            or creds.uri is None
            or (creds.qop or "").lower() != "auth"
            or not creds.cnonce
        ):
            return AuthResult.MISSING, username
        nc_text = creds.nc or ""
        if len(nc_text) != 8 or not _HEX8.issuperset(nc_text):
            return AuthResult.MISSING, username
        status, issued = self._nonces.verify(nonce, source_ip, now)
        if status is digest.NonceStatus.INVALID:
            return AuthResult.BAD_NONCE, username
        algorithm = (creds.algorithm or "MD5").upper()
        if algorithm not in self._challenged:
            return AuthResult.MISSING, username  # the same for every user: nobody was offered it
        # Unknown user, or an algorithm this account may not use: verify against a dummy HA1,
        # so the answer and the work match a wrong password.
        keys = self._ha1.get(username)
        key = keys.get(algorithm) if keys is not None else None
        good = digest.verify(algorithm, key or self._dummy[algorithm], creds,
                             msg.method or "REGISTER", body=msg.body)
        if not good or key is None:
            return AuthResult.FAILED, username
        if (status is digest.NonceStatus.STALE or issued < self._not_before
                or self._counter.forgotten(issued)):
            return AuthResult.STALE, username
        if not self._counter.accept(nonce, issued, int(nc_text, 16), now):
            return AuthResult.REPLAY, username
        return AuthResult.OK, username

    def prune(self, now: float) -> None:
        self._counter.prune(now)
