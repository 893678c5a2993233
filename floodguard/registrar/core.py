"""The registrar's transport-independent core: request dispatch and REGISTER (RFC 3261 §10.3).

`Registrar.handle_datagram` / `handle_message` take one message and where it came from and return
the bytes to send back (or None). Nothing here raises for any input: malformed requests get a 400
with a reason, non-SIP input is dropped. Authenticated REGISTERs and INVITEs go through a small
response cache keyed by transaction, so a UDP retransmission is answered with the same response
instead of being taken for a replay.

Nothing about an account reaches a caller who has not authenticated: REGISTER and INVITE are
challenged with the same 401 whoever they name, and the INVITE answers that depend on the callee
(302 with its contacts, 480, 404) go only to a caller holding valid credentials of any account.
Every other answer before authentication (OPTIONS 200, 405, 481, 416, 420, 400) depends on the
request alone, never on the accounts or bindings.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from floodguard.registrar import calls
from floodguard.registrar.accounts import Account
from floodguard.registrar.auth import Authenticator, AuthResult
from floodguard.registrar.bindings import Binding, BindingTable
from floodguard.registrar.liveness import Liveness
from floodguard.registrar.responses import (
    ReplyHead,
    plausible_party,
    plausible_uri,
    response,
    salvage_400,
    uri_scheme_ok,
    uri_user,
    valid_contact_uri,
)
from floodguard.sip.message import SipMessage, SipParseError, parse_message

log = logging.getLogger("floodguard.registrar")

_DROP_REASONS = frozenset({"empty", "not_sip"})
_AUTH_STAT = {result: f"auth {result.value}" for result in AuthResult}
_KNOWN_METHODS = frozenset({"REGISTER", "INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "MESSAGE",
                            "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "UPDATE", "PRACK"})


@dataclass(frozen=True)
class Settings:
    """Everything the registrar reads from the config (``[registrar]`` and ``state.path``)."""

    listen: tuple[str, ...] = ("0.0.0.0:5060",)
    realm: str = "floodguard"
    expire: int = 3600
    min_expire: int = 60
    time_to_live: int = 60
    accounts: str = "/etc/floodguard/accounts.toml"
    algorithms: tuple[str, ...] = ("MD5", "SHA-256")
    state_path: str = "/var/lib/floodguard/state.db"
    # Keys the config schema may not have yet; read with getattr and these defaults.
    tls_cert: str = ""
    tls_key: str = ""
    tls_listen: tuple[str, ...] = ()
    nonce_lifetime: int = 60
    max_contacts: int = 10
    tcp_idle_timeout: int = 300
    max_connections: int = 10000
    max_connections_per_source: int = 32
    ipv6_prefix: int = 64  # limits.ipv6_prefix: an IPv6 source is its /64
    tcp_write_timeout: float = 10.0
    liveness_timeout: float = 4.0
    workers: int = 0  # processes sharing the UDP sockets; 0: one per CPU (see workers.py)

    @classmethod
    def from_config(cls, cfg: Any, extras: Mapping[str, Any] | None = None) -> Settings:
        """Build from a `floodguard.config.Config`; `extras` fill keys its schema lacks."""
        reg = cfg.registrar
        extras = dict(extras or {})
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "state_path":
                values[f.name] = cfg.state.path
            elif f.name == "ipv6_prefix":
                values[f.name] = cfg.limits.ipv6_prefix
            elif hasattr(reg, f.name):
                values[f.name] = getattr(reg, f.name)
            elif f.name in extras:
                values[f.name] = extras[f.name]
        for name in ("listen", "algorithms", "tls_listen"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


class Source(NamedTuple):
    """Where a message came from: transport, peer address and the local socket's id."""

    transport: str
    ip: str
    port: int
    local: str


class ResponseCache:
    """Recent responses by transaction; two generations rotated every `lifetime` seconds."""

    __slots__ = ("_new", "_old", "_rotated", "_lifetime", "_cap")

    def __init__(self, lifetime: float = 16.0, cap: int = 65536) -> None:
        self._new: dict[tuple[Any, ...], bytes] = {}
        self._old: dict[tuple[Any, ...], bytes] = {}
        self._rotated = 0.0
        self._lifetime = lifetime
        self._cap = cap

    def get(self, key: tuple[Any, ...]) -> bytes | None:
        found = self._new.get(key)
        return self._old.get(key) if found is None else found

    def put(self, key: tuple[Any, ...], value: bytes, now: float) -> None:
        if len(self._new) >= self._cap or now - self._rotated >= self._lifetime:
            self._old, self._new, self._rotated = self._new, {}, now
        self._new[key] = value

    def __len__(self) -> int:
        return len(self._new) + len(self._old)


class Registrar:
    """Dispatches requests; owns the REGISTER logic."""

    def __init__(
        self,
        settings: Settings,
        accounts: Mapping[str, Account],
        table: BindingTable,
        *,
        secret: bytes,
        started: float | None = None,
        liveness: Liveness | None = None,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        report: Callable[[str, str, bool, int | None], None] | None = None,
    ) -> None:
        """``report(ip, aor, ok, expires)``: told the outcome of every authenticated REGISTER
        over TLS, which the guard cannot read (see floodguard.store.put_report)."""
        self.report = report
        self.settings = settings
        self.table = table
        self.liveness = liveness
        self.wall = wall
        self.mono = mono
        self.auth = Authenticator(
            settings.realm, accounts, settings.algorithms, secret, settings.nonce_lifetime,
            wall() if started is None else started,
        )
        self.cache = ResponseCache()
        self.stats: Counter[str] = Counter()
        # Several workers (workers.py): `router(msg, src, raw)` takes a message elsewhere
        # (True) or lets it be handled here; `lookup` reads bindings this worker does not own.
        self.router: Callable[[SipMessage, Source, bytes], bool] | None = None
        self.lookup: BindingTable | Any = table

    def set_accounts(self, accounts: Mapping[str, Account]) -> None:
        self.auth.set_accounts(accounts)

    # --- entry points ------------------------------------------------------------------

    def handle_datagram(self, data: bytes, src: Source, *, route: bool = True) -> bytes | None:
        """One UDP datagram in, the answer (if any) out (`route` False: never pass it on)."""
        try:
            msg = parse_message(data)
        except SipParseError as exc:
            return self.bad_input(data, src, exc.reason)
        return self.handle_message(msg, src, data if route else None)

    def bad_input(self, data: bytes, src: Source, reason: str) -> bytes | None:
        """Answer for input the parser rejected: 400 with a reason, or nothing for non-SIP."""
        self.stats["malformed"] += 1
        if reason in _DROP_REASONS:
            return None
        return salvage_400(data, reason, src.ip, src.port)

    def handle_message(self, msg: SipMessage, src: Source, raw: bytes | None = None
                       ) -> bytes | None:
        """One parsed message in, the answer (if any) out; `raw` (its bytes) lets the router
        pass it to the worker that owns its state."""
        # the router takes responses and requests with credentials only (the rest is
        # stateless): asking it about anything else would only cost a call
        if (raw is not None and self.router is not None
                and (not msg.is_request or msg.authorization is not None)
                and self.router(msg, src, raw)):
            return None
        if not msg.is_request:
            if self.liveness is not None:
                self.liveness.on_response(msg, self.mono(), self.wall())
            return None
        method = msg.method or ""
        self.stats[method if method in _KNOWN_METHODS else "other method"] += 1
        head = ReplyHead.of(msg)
        if not head.vias:
            self.stats["malformed"] += 1
            return None  # nowhere to send a response
        problem = self._missing(msg, head)
        if problem is not None:
            if method == "ACK":
                return None
            self.stats["malformed"] += 1
            return response(head, 400, src.ip, src.port, reason=problem)
        if method == "REGISTER":
            return self._register(msg, head, src)
        if method != "ACK" and not uri_scheme_ok(msg.request_uri):
            return response(head, 416, src.ip, src.port)
        if method != "ACK" and method != "CANCEL" and msg.header("require"):
            return self._bad_extension(msg, head, src)
        if method == "INVITE":
            return self._invite(msg, head, src)
        if method == "OPTIONS":
            status, reason, headers = calls.options()
            return response(head, status, src.ip, src.port, reason=reason, headers=headers)
        answer = calls.other(method)
        if answer is None:
            return None
        status, reason, headers = answer
        return response(head, status, src.ip, src.port, reason=reason, headers=headers)

    @staticmethod
    def _missing(msg: SipMessage, head: ReplyHead) -> str | None:
        if not head.call_id:
            return "Bad Request - Missing Call-ID"
        if head.cseq_num is None:
            return "Bad Request - Missing CSeq"
        if not plausible_party(head.from_value):
            return "Bad Request - Missing or Malformed From"
        if not plausible_uri(msg.to_uri):
            return "Bad Request - Missing or Malformed To"
        if head.cseq_method != msg.method:
            return "Bad Request - CSeq Method Does Not Match"
        return None

    def _bad_extension(self, msg: SipMessage, head: ReplyHead, src: Source) -> bytes:
        tags = ", ".join(msg.headers("require"))[:256]
        return response(head, 420, src.ip, src.port, headers=[f"Unsupported: {tags}"])

    # --- REGISTER ------------------------------------------------------------------------

    def _register(self, msg: SipMessage, head: ReplyHead, src: Source) -> bytes | None:
        if not uri_scheme_ok(msg.request_uri):
            return response(head, 416, src.ip, src.port)
        to_user = msg.to_user
        domain = msg.to_host
        if not uri_scheme_ok(msg.to_uri) or not to_user or not domain:
            return response(head, 400, src.ip, src.port,
                            reason="Bad Request - To Must Be a SIP AOR with a User")
        if msg.header("require"):
            return self._bad_extension(msg, head, src)
        key = self._cache_key(msg, head, src)
        if key is not None and (cached := self.cache.get(key)) is not None:
            self.stats["retransmission"] += 1
            return cached
        now = self.wall()
        result, username = self.auth.check(msg, src.ip, now)
        self.stats[_AUTH_STAT[result]] += 1
        aor = f"{to_user}@{domain}".lower()
        if result is not AuthResult.OK:
            if result is AuthResult.FAILED:
                self._tell(src, aor, False, None)
            return self._challenge(head, src, now, result)
        if username != to_user:
            # Anti-hijack: credentials only ever change the AOR of their own user.
            reply = response(head, 403, src.ip, src.port,
                             reason="Forbidden - Username Does Not Match AOR")
            self._tell(src, aor, False, None)
        else:
            reply = self._apply(msg, head, src, to_user, domain, now)
            if reply.startswith(b"SIP/2.0 200 "):
                self._tell(src, aor, True, msg.expires)
        # The nonce-count is used up now: a retransmission must get this same answer.
        if key is not None:
            self.cache.put(key, reply, self.mono())
        return reply

    def _tell(self, src: Source, aor: str, ok: bool, expires: int | None) -> None:
        """Report a proven outcome over TLS to the guard (it reads UDP and TCP itself)."""
        if self.report is not None and src.transport == "tls":
            self.report(src.ip, aor, ok, expires)

    # --- INVITE: a redirect server, for authenticated callers only ----------------------------

    def _invite(self, msg: SipMessage, head: ReplyHead, src: Source) -> bytes:
        """302/480/404 only after the caller authenticated as any account; before that, every
        INVITE gets the same 401 whether the callee exists, is online, offline or unknown."""
        key = self._cache_key(msg, head, src)
        if key is not None and (cached := self.cache.get(key)) is not None:
            self.stats["retransmission"] += 1
            return cached
        now = self.wall()
        result, _ = self.auth.check(msg, src.ip, now)
        self.stats[f"INVITE {_AUTH_STAT[result]}"] += 1
        if result is not AuthResult.OK:
            return self._challenge(head, src, now, result)
        status, reason, headers = calls.invite(
            msg.request_uri, self.lookup, self.auth.known(_ruri_user(msg)), now)
        self.stats[f"INVITE {status}"] += 1
        reply = response(head, status, src.ip, src.port, reason=reason, headers=headers)
        if key is not None:
            self.cache.put(key, reply, self.mono())
        return reply

    # --- shared by REGISTER and INVITE ---------------------------------------------------------

    @staticmethod
    def _cache_key(msg: SipMessage, head: ReplyHead, src: Source) -> tuple[Any, ...] | None:
        """Transaction key for answers that used up a nonce-count (None: no credentials)."""
        if msg.authorization is None:
            return None
        return (src.ip, src.port, head.call_id, head.cseq_num, head.cseq_method, msg.via_branch)

    def _challenge(self, head: ReplyHead, src: Source, now: float, result: AuthResult) -> bytes:
        challenge = self.auth.challenge(src.ip, now, stale=result is AuthResult.STALE)
        return response(head, 401, src.ip, src.port, headers=challenge)

    def _apply(self, msg: SipMessage, head: ReplyHead, src: Source, aor: str, domain: str,
               now: float) -> bytes:
        s = self.settings
        call_id = head.call_id
        cseq = head.cseq_num or 0
        header_expires = msg.expires
        if header_expires is None and msg.header("expires") is not None:
            return response(head, 400, src.ip, src.port, reason="Bad Request - Malformed Expires")
        contacts = msg.contacts
        current = self.table.contacts(aor)
        if any(c.star for c in contacts):
            if len(contacts) != 1 or header_expires != 0:
                return response(head, 400, src.ip, src.port,
                                reason="Bad Request - Contact * Needs Expires 0 and No Other "
                                       "Contact")
            for binding in current.values():
                if binding.call_id == call_id and cseq <= binding.cseq:
                    return self._out_of_order(head, src)
            for bound in list(current):
                self.table.remove(aor, bound)
            self.stats["unregister all"] += 1
            log.info("%s: all bindings removed (from %s)", aor, src.ip,
                     extra={"event": "unregister", "fields": {"aor": aor, "ip": src.ip}})
            return self._ok(head, src, aor, now)
        if len(contacts) > s.max_contacts:
            return response(head, 403, src.ip, src.port, reason="Forbidden - Too Many Contacts")
        changes: dict[str, int] = {}
        for contact in contacts:
            if not valid_contact_uri(contact.uri):
                return response(head, 400, src.ip, src.port,
                                reason="Bad Request - Invalid Contact URI")
            if contact.expires is None and "expires" in contact.params:
                return response(head, 400, src.ip, src.port,
                                reason="Bad Request - Malformed Contact Expires")
            if contact.expires is not None:
                expires = contact.expires
            elif header_expires is not None:
                expires = header_expires
            else:
                expires = s.expire
            if 0 < expires < s.min_expire:
                return response(head, 423, src.ip, src.port,
                                headers=[f"Min-Expires: {s.min_expire}"])
            existing = current.get(contact.uri)
            if (existing is not None and existing.expires_at > now
                    and existing.call_id == call_id and cseq <= existing.cseq):
                return self._out_of_order(head, src)
            changes[contact.uri] = min(expires, s.expire)
        if changes:
            alive = {c for c, b in current.items() if b.expires_at > now}
            for uri, expires in changes.items():
                if expires:
                    alive.add(uri)
                else:
                    alive.discard(uri)
            if len(alive) > s.max_contacts:
                return response(head, 403, src.ip, src.port, reason="Forbidden - Too Many Contacts")
        mono = self.mono()
        user_agent = (msg.user_agent or "")[:128]
        for uri, expires in changes.items():
            if not expires:
                if self.table.remove(aor, uri):
                    log.info("%s: %s removed (from %s)", aor, uri, src.ip,
                             extra={"event": "unregister",
                                    "fields": {"aor": aor, "contact": uri, "ip": src.ip}})
                self.stats["unregister"] += 1
                continue
            found = current.get(uri)
            if found is None:
                binding = Binding(aor, uri, domain, src.transport, src.ip, src.port, src.local,
                                  call_id, cseq, now + expires, now, now, True, user_agent)
                self.table.put(binding)
                self.stats["register new"] += 1
                log.info("%s: %s bound for %d s (from %s:%s/%s)", aor, uri, expires, src.ip,
                         src.port, src.transport,
                         extra={"event": "register",
                                "fields": {"aor": aor, "contact": uri, "expires": expires,
                                           "ip": src.ip, "port": src.port,
                                           "transport": src.transport}})
            else:
                binding = found
                binding.domain = domain
                binding.transport, binding.source_ip, binding.source_port = src[:3]
                binding.local = src.local
                binding.call_id, binding.cseq = call_id, cseq
                binding.expires_at = now + expires
                binding.registered_at = binding.last_seen = now
                binding.online = True
                binding.user_agent = user_agent
                self.table.touch(binding)
                self.stats["register refresh"] += 1
            if self.liveness is not None:
                self.liveness.track(binding.key, mono)
                self.liveness.alive(binding.key, mono)
        return self._ok(head, src, aor, now)

    def _ok(self, head: ReplyHead, src: Source, aor: str, now: float) -> bytes:
        headers = [f"Contact: <{b.contact}>;expires={b.remaining(now)}"
                   for b in self.table.active(aor, now)]
        return response(head, 200, src.ip, src.port, headers=headers, date=True)

    def _out_of_order(self, head: ReplyHead, src: Source) -> bytes:
        self.stats["out of order"] += 1
        return response(head, 400, src.ip, src.port, reason="Bad Request - Out-of-Order CSeq")


def _ruri_user(msg: SipMessage) -> str | None:
    return uri_user(msg.request_uri)
