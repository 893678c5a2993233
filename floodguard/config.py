"""Configuration: TOML file -> frozen dataclasses, with VOS3000 aliases and full validation.

Every error in a file is reported at once, each naming its key path and why, e.g.
``suspension.register_retry: must be an integer >= 1, got "six"``. Unknown keys are errors so a
typo never silently falls back to a default.

The field checkers are in config_fields.py, the TOML rendering (``dumps``) in config_render.py.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from floodguard import config_fields as cf
from floodguard.config_fields import split_listen as split_listen
from floodguard.config_render import dumps as dumps
from floodguard.config_render import redact_url as redact_url
from floodguard.errors import ConfigurationError

DEFAULT_PATH = "/etc/floodguard/floodguard.toml"
ENV_VAR = "FLOODGUARD_CONFIG"


class ConfigError(ConfigurationError):
    """One or more configuration errors; ``errors`` holds one message per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class SipConfig:
    """Where SIP arrives and how floodguard sits in the path."""

    ports: tuple[int, ...] = field(
        default=(5060,), metadata=cf.check(cf.list_of(cf.port, "ports from 1 to 65535"))
    )
    transports: tuple[str, ...] = field(
        default=("udp", "tcp"),
        metadata=cf.check(cf.list_of(cf.one_of("udp", "tcp"), '"udp" or "tcp"')),
    )
    mode: str = field(default="local", metadata=cf.check(cf.one_of("local", "forward")))
    # SIP over TLS: not inspected, but banned sources are dropped and the per-source limits
    # apply (floodguard's own registrar tells the guard its TLS outcomes directly)
    tls_ports: tuple[int, ...] = field(
        default=(5061,), metadata=cf.check(cf.list_of(cf.port, "ports from 1 to 65535",
                                                  nonempty=False)))
    # forward mode: the interfaces on the registrar's side. A packet is the registrar's output
    # only when it really arrives from there (never judged by its ports: anyone can send from
    # port 5060), and requests arriving there are not clients'.
    registrar_interfaces: tuple[str, ...] = field(
        default=(), metadata=cf.check(cf.list_of(cf.interface, "interface names", nonempty=False)))


UDP_OVERSIZE_MAX = 65531  # the largest copy NFQUEUE makes (kernel/nfqueue.py COPY_RANGE)


@dataclass(frozen=True)
class LimitsConfig:
    """Per-source rate limits (packets per second) and the global queue budget."""

    register_rate: float = field(default=5.0, metadata=cf.check(cf.number_gt(0)))
    register_burst: int = field(default=10, metadata=cf.check(cf.int_ge(1)))
    sip_rate: float = field(default=20.0, metadata=cf.check(cf.number_gt(0)))
    sip_burst: int = field(default=50, metadata=cf.check(cf.int_ge(1)))
    queue_budget: int = field(default=20000, metadata=cf.check(cf.int_ge(1)))
    # IPv6 sources are limited, counted, suspended and banned per prefix of this length: one
    # host usually owns a whole /64 and can rotate through it at will.
    ipv6_prefix: int = field(default=64, metadata=cf.check(cf.int_ge(8, 128)))
    # An inbound UDP SIP packet of this many bytes or more (IP header included) is dropped
    # unread ("oversize"): RFC 3261 (18.1.1) sends a request over 1,300 bytes over TCP, and
    # multi-kilobyte Contact lists are an attack. At most the guard's queue copy range
    # (nfqueue.COPY_RANGE), so a packet the queue cuts short is always oversize.
    udp_oversize: int = field(default=4016, metadata=cf.check(cf.int_ge(1300, UDP_OVERSIZE_MAX)))


@dataclass(frozen=True)
class AdmissionConfig:
    """Admission of unknown sources by the registrar's measured health (floodguard.policy.
    admission): the rate adapts between ``floor`` and ``limits.queue_budget`` (the ceiling);
    ``mode = "static"`` keeps it at ``limits.queue_budget``."""

    mode: str = field(default="auto", metadata=cf.check(cf.one_of("auto", "static")))
    floor: int = field(default=100, metadata=cf.check(cf.int_ge(1)))
    start: int = field(default=1000, metadata=cf.check(cf.int_ge(1)))
    # answers slower than this at the 90th percentile, or more unanswered than max_missing of
    # the admitted requests, cut the rate
    latency_ms: float = field(default=200.0, metadata=cf.check(cf.number_gt(0)))
    max_missing: float = field(default=0.05, metadata=cf.check(cf.number_gt(0)))


@dataclass(frozen=True)
class SuspensionConfig:
    """VOS3000 endpoint suspension: consecutive proven failures -> suspended."""

    enabled: bool = field(default=True, metadata=cf.check(cf.boolean))
    register_retry: int = field(default=6, metadata=cf.check(cf.int_ge(1)))
    suspend_time: int = field(default=180, metadata=cf.check(cf.int_ge(1)))


@dataclass(frozen=True)
class AccountConfig:
    """Account protection: proven failures on one account from ``sources`` distinct sources
    within ``blacklist.window`` (distributed guessing) protect it for ``suspension.suspend_time``
    (escalating like bans); meanwhile only its known-good (source, account) pairs reach it."""

    protect: bool = field(default=True, metadata=cf.check(cf.boolean))
    sources: int = field(default=5, metadata=cf.check(cf.int_ge(2)))


@dataclass(frozen=True)
class BlacklistConfig:
    """Dynamic blacklist for spraying and repeat offenders, and the never-banned allow list."""

    auth_failures: int = field(default=5, metadata=cf.check(cf.int_ge(1)))
    window: int = field(default=600, metadata=cf.check(cf.int_ge(1)))
    ban_time: int = field(default=3600, metadata=cf.check(cf.int_ge(1)))
    escalation: float = field(default=2.0, metadata=cf.check(cf.number_ge(1)))
    max_ban_time: int = field(default=86400, metadata=cf.check(cf.int_ge(1)))
    allow: tuple[str, ...] = field(
        default=("127.0.0.0/8", "::1/128"),
        metadata=cf.check(cf.list_of(cf.cidr, "IP networks in CIDR form", nonempty=False)),
    )


@dataclass(frozen=True)
class ScannerConfig:
    """User-agent substrings of scanners, dropped case-insensitively."""

    user_agents: tuple[str, ...] = field(
        default=("friendly-scanner", "sipvicious", "sipcli", "VaxSIPUserAgent", "pplsip"),
        metadata=cf.check(cf.list_of(cf.nonempty_str, "non-empty strings", nonempty=False)),
    )


@dataclass(frozen=True)
class GatewayConfig:
    """A named group of source networks sharing one requests-per-second budget."""

    name: str = field(default="", metadata=cf.check(cf.nonempty_str))
    sources: tuple[str, ...] = field(
        default=(), metadata=cf.check(cf.list_of(cf.cidr, "IP networks in CIDR form"))
    )
    cps: float = field(default=50.0, metadata=cf.check(cf.number_gt(0)))


@dataclass(frozen=True)
class FeedConfig:
    """A community blocklist (one IP per line, # comments) imported into the ban set."""

    name: str = field(default="", metadata=cf.check(cf.nonempty_str))
    source: str = field(default="", metadata=cf.check(cf.nonempty_str))  # path, file:// or http(s)://
    interval: int = field(default=3600, metadata=cf.check(cf.int_ge(1)))
    ban_time: int = field(default=7200, metadata=cf.check(cf.int_ge(1)))


@dataclass(frozen=True)
class QueueConfig:
    """NFQUEUE numbers, worker count and the fail-open switch."""

    num: int = field(default=0, metadata=cf.check(cf.int_ge(0, 65535)))
    workers: int = field(default=1, metadata=cf.check(cf.int_ge(1, 64)))
    fail_open: bool = field(default=True, metadata=cf.check(cf.boolean))


@dataclass(frozen=True)
class RegistrarConfig:
    """The built-in RFC 3261 registrar."""

    listen: tuple[str, ...] = field(
        default=("0.0.0.0:5060",),
        metadata=cf.check(cf.list_of(cf.listen, '"ADDRESS:PORT" strings')),
    )
    realm: str = field(default="floodguard", metadata=cf.check(cf.nonempty_str))
    expire: int = field(default=3600, metadata=cf.check(cf.int_ge(1)))
    min_expire: int = field(default=60, metadata=cf.check(cf.int_ge(1)))
    time_to_live: int = field(default=60, metadata=cf.check(cf.int_ge(1)))
    accounts: str = field(default="/etc/floodguard/accounts.toml",
                          metadata=cf.check(cf.nonempty_str))
    algorithms: tuple[str, ...] = field(
        default=("MD5", "SHA-256"),
        metadata=cf.check(cf.list_of(cf.algorithm, '"MD5" or "SHA-256"')),
    )
    tls_cert: str = field(default="", metadata=cf.check(cf.string))
    tls_key: str = field(default="", metadata=cf.check(cf.string))
    tls_listen: tuple[str, ...] = field(  # empty: port 5061 on every listen host (with a cert)
        default=(),
        metadata=cf.check(cf.list_of(cf.listen, '"ADDRESS:PORT" strings', nonempty=False)),
    )
    nonce_lifetime: int = field(default=60, metadata=cf.check(cf.int_ge(1)))
    max_contacts: int = field(default=10, metadata=cf.check(cf.int_ge(1)))
    tcp_idle_timeout: int = field(default=300, metadata=cf.check(cf.int_ge(1)))
    max_connections: int = field(default=10000, metadata=cf.check(cf.int_ge(1)))
    # TCP/TLS connections one source may hold (an IPv6 source is its /64), so a few addresses
    # cannot take every slot of max_connections.
    max_connections_per_source: int = field(default=32, metadata=cf.check(cf.int_ge(1)))
    # Seconds a TCP/TLS peer may leave our answers unread (output over the high-water mark)
    # before the connection is dropped and its buffers freed.
    tcp_write_timeout: float = field(default=10.0, metadata=cf.check(cf.number_ge(0.5)))
    # registrar processes sharing the UDP sockets (each account belongs to one); 0: one per CPU
    workers: int = field(default=0, metadata=cf.check(cf.int_ge(0)))
    liveness_timeout: float = field(default=4.0, metadata=cf.check(cf.number_ge(0.5)))


@dataclass(frozen=True)
class GuardConfig:
    """How the guard acts: "enforce" drops and bans; "monitor" only computes, logs and counts."""

    mode: str = field(default="enforce", metadata=cf.check(cf.one_of("enforce", "monitor")))


@dataclass(frozen=True)
class StateConfig:
    """Where bans and bindings persist."""

    path: str = field(default="/var/lib/floodguard/state.db", metadata=cf.check(cf.nonempty_str))


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus exposition address."""

    listen: str = field(default="127.0.0.1:9477", metadata=cf.check(cf.listen))



@dataclass(frozen=True)
class FleetConfig:
    """Sharing bans and known-good sources with other floodguard nodes through Redis."""

    redis_url: str = field(default="", metadata=cf.check(cf.redis_url))  # empty: single node
    node: str = field(default="", metadata=cf.check(cf.fleet_name))  # empty: the host name
    channel: str = field(default="floodguard", metadata=cf.check(
        lambda v: cf.fleet_name(cf.nonempty_str(v))))


@dataclass(frozen=True)
class Config:
    """The whole effective configuration."""

    sip: SipConfig = field(default_factory=SipConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    suspension: SuspensionConfig = field(default_factory=SuspensionConfig)
    blacklist: BlacklistConfig = field(default_factory=BlacklistConfig)
    account: AccountConfig = field(default_factory=AccountConfig)
    scanner: ScannerConfig = field(default_factory=ScannerConfig)
    gateways: tuple[GatewayConfig, ...] = ()
    feeds: tuple[FeedConfig, ...] = ()
    queue: QueueConfig = field(default_factory=QueueConfig)
    registrar: RegistrarConfig = field(default_factory=RegistrarConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    state: StateConfig = field(default_factory=StateConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    source: str | None = None  # the file it was read from, None for built-in defaults


_SECTIONS: dict[str, type] = {
    "sip": SipConfig,
    "limits": LimitsConfig,
    "admission": AdmissionConfig,
    "suspension": SuspensionConfig,
    "blacklist": BlacklistConfig,
    "account": AccountConfig,
    "scanner": ScannerConfig,
    "queue": QueueConfig,
    "registrar": RegistrarConfig,
    "guard": GuardConfig,
    "state": StateConfig,
    "metrics": MetricsConfig,
    "fleet": FleetConfig,
}

# VOS3000 system parameter -> (section, key)
VOS3000_ALIASES: dict[str, tuple[str, str]] = {
    "SS_ENDPOINTREGISTERRETRY": ("suspension", "register_retry"),
    "SS_ENDPOINTREGISTERSUSPEND": ("suspension", "enabled"),
    "SS_ENDPOINTREGISTERSUSPENDTIME": ("suspension", "suspend_time"),
    "SS_ENDPOINTTIMETOLIVE": ("registrar", "time_to_live"),
    "SS_ENDPOINT_EXPIRE": ("registrar", "expire"),
}


# ---------------------------------------------------------------- building


def _build_section(cls: type, raw: Any, path: str, errors: list[str]) -> Any:
    if not isinstance(raw, Mapping):
        errors.append(f"{path}: must be a table")
        return cls()
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            errors.append(f"{path}.{key}: unknown key (known: {', '.join(sorted(known))})")
            continue
        try:
            values[key] = known[key].metadata["check"](value)
        except cf.Invalid as exc:
            errors.append(f"{path}.{key}: {exc}, got {cf.show(value)}")
    return cls(**values)


def _apply_vos3000(data: dict[str, Any], errors: list[str]) -> None:
    raw = data.pop("vos3000", None)
    if raw is None:
        return
    if not isinstance(raw, Mapping):
        errors.append("vos3000: must be a table")
        return
    for name, value in raw.items():
        target = VOS3000_ALIASES.get(name.upper()) if isinstance(name, str) else None
        if target is None:
            errors.append(
                f"vos3000.{name}: unknown parameter (known: {', '.join(VOS3000_ALIASES)})"
            )
            continue
        section, key = target
        if name.upper() == "SS_ENDPOINTREGISTERSUSPEND" and value in (0, 1):
            value = bool(value)  # VOS3000 writes the switch as 0/1
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            continue  # the section's own error is reported when it is built
        if key in table and table[key] != value:
            errors.append(
                f"vos3000.{name}: conflicts with {section}.{key} "
                f"({cf.show(value)} vs {cf.show(table[key])}); set only one"
            )
            continue
        table[key] = value


def _cross_checks(cfg: Config, errors: list[str]) -> None:
    if cfg.registrar.min_expire > cfg.registrar.expire:
        errors.append(
            f"registrar.min_expire: must be <= registrar.expire ({cfg.registrar.expire}), "
            f"got {cfg.registrar.min_expire}"
        )
    if cfg.blacklist.max_ban_time < cfg.blacklist.ban_time:
        errors.append(
            f"blacklist.max_ban_time: must be >= blacklist.ban_time ({cfg.blacklist.ban_time}), "
            f"got {cfg.blacklist.max_ban_time}"
        )
    if cfg.sip.mode == "forward" and not cfg.sip.registrar_interfaces:
        errors.append('sip.registrar_interfaces: required with mode = "forward" (the '
                      "interfaces on the registrar's side, e.g. [\"eth1\"])")
    if cfg.queue.num + cfg.queue.workers - 1 > 65535:
        errors.append("queue.workers: queue.num + workers - 1 must be <= 65535")
    for what, items in (("gateway", cfg.gateways), ("feed", cfg.feeds)):
        names = [item.name for item in items]
        for name in sorted({n for n in names if names.count(n) > 1}):
            errors.append(f'{what}: name "{name}" is used more than once')


# [[name]] arrays of tables: name -> (dataclass, the keys each entry needs, how to say so)
_ARRAYS: dict[str, tuple[type, tuple[str, ...], str]] = {
    "gateway": (GatewayConfig, ("name", "sources"), "needs a name and sources"),
    "feed": (FeedConfig, ("name", "source"), "needs a name and a source"),
}


def _build_array(key: str, raw: Any, errors: list[str]) -> tuple[Any, ...]:
    cls, required, message = _ARRAYS[key]
    if not isinstance(raw, list):
        errors.append(f"{key}: must be an array of tables ([[{key}]])")
        return ()
    out = []
    for index, item in enumerate(raw):
        before = len(errors)
        entry = _build_section(cls, item, f"{key}[{index}]", errors)
        if len(errors) == before and not all(getattr(entry, r) for r in required):
            errors.append(f"{key}[{index}]: {message}")
        out.append(entry)
    return tuple(out)


def from_mapping(data: Mapping[str, Any], source: str | None = None) -> Config:
    """Build a Config from parsed TOML; raises ConfigError listing every problem."""
    errors: list[str] = []
    data = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in data.items()}
    _apply_vos3000(data, errors)
    sections: dict[str, Any] = {}
    tables: dict[str, tuple[Any, ...]] = {}
    for key, raw in data.items():
        if key in _SECTIONS:
            sections[key] = _build_section(_SECTIONS[key], raw, key, errors)
        elif key in _ARRAYS:
            tables[key] = _build_array(key, raw, errors)
        else:
            known = ", ".join(sorted([*_SECTIONS, *_ARRAYS, "vos3000"]))
            errors.append(f"{key}: unknown section (known: {known})")
    gateways, feeds = tables.get("gateway", ()), tables.get("feed", ())
    cfg = Config(**sections, gateways=gateways, feeds=feeds, source=source)
    _cross_checks(cfg, errors)
    if errors:
        raise ConfigError(errors)
    return cfg


def loads(text: str, source: str | None = None) -> Config:
    """Parse TOML text into a Config."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source or '<config>'}: not valid TOML: {exc}"]) from None
    return from_mapping(data, source)


def resolve_path(path: str | os.PathLike[str] | None) -> Path:
    """The config path: the argument, else $FLOODGUARD_CONFIG, else the default."""
    return Path(path or os.environ.get(ENV_VAR) or DEFAULT_PATH)


def load(path: str | os.PathLike[str] | None = None, *, missing_ok: bool = True) -> Config:
    """Load the config file; a missing default file means built-in defaults."""
    explicit = path is not None or ENV_VAR in os.environ
    target = resolve_path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok and not explicit:
            return Config()
        raise ConfigError([f"{target}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{target}: cannot read: {exc}"]) from None
    return loads(text, str(target))


def with_changes(cfg: Config, **sections: Any) -> Config:
    """A copy of cfg with whole sections replaced (used by tests and the lab)."""
    return replace(cfg, **sections)
