"""Configuration: TOML file -> frozen dataclasses, with VOS3000 aliases and full validation.

Every error in a file is reported at once, each naming its key path and why, e.g.
``suspension.register_retry: must be an integer >= 1, got "six"``. Unknown keys are errors so a
typo never silently falls back to a default.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from floodguard.errors import ConfigurationError

DEFAULT_PATH = "/etc/floodguard/floodguard.toml"
ENV_VAR = "FLOODGUARD_CONFIG"


class ConfigError(ConfigurationError):
    """One or more configuration errors; ``errors`` holds one message per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class _Invalid(ConfigurationError):
    """Raised by a field checker: the message says what the value must be."""


# ---------------------------------------------------------------- field checkers


def _show(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _int_ge(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        if ok and maximum is not None and value > maximum:
            ok = False
        if not ok:
            if maximum is None:
                raise _Invalid(f"must be an integer >= {minimum}")
            raise _Invalid(f"must be an integer from {minimum} to {maximum}")
        return value

    return check


def _number_gt(minimum: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > minimum:
            raise _Invalid(f"must be a number > {minimum:g}")
        return float(value)

    return check


def _number_ge(minimum: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= minimum:
            raise _Invalid(f"must be a number >= {minimum:g}")
        return float(value)

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid("must be true or false")
    return value


def _nonempty_str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Invalid("must be a non-empty string")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid("must be a string")
    return value


def _one_of(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise _Invalid("must be one of " + ", ".join(f'"{c}"' for c in choices))
        return value

    return check


def _list_of(
    item: Callable[[Any], Any], what: str, *, nonempty: bool = True, unique: bool = True
) -> Callable[[Any], tuple[Any, ...]]:
    def check(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list) or (nonempty and not value):
            raise _Invalid(f"must be a {'non-empty ' if nonempty else ''}list of {what}")
        out = []
        for element in value:
            try:
                out.append(item(element))
            except _Invalid:
                raise _Invalid(f"must be a list of {what}") from None
        if unique and len(set(out)) != len(out):
            raise _Invalid(f"must be a list of {what} without duplicates")
        return tuple(out)

    return check


def _interface(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.:@+-]{1,15}", value):
        raise _Invalid("must be a network interface name")
    return value


def _port(value: Any) -> int:
    return _int_ge(1, 65535)(value)


def _cidr(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid("must be an IP network in CIDR form")
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise _Invalid("must be an IP network in CIDR form") from None


def split_listen(value: str) -> tuple[str, int]:
    """Split ``host:port`` / ``[v6]:port`` into its parts; raises ValueError when malformed."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(value)
    else:
        host, sep, port = value.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(value)
    ipaddress.ip_address(host)
    number = int(port)
    if not 1 <= number <= 65535:
        raise ValueError(value)
    return host, number


def _listen(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid('must be "ADDRESS:PORT" (IPv6 as "[ADDRESS]:PORT")')
    try:
        split_listen(value)
    except ValueError:
        raise _Invalid('must be "ADDRESS:PORT" (IPv6 as "[ADDRESS]:PORT")') from None
    return value


_DIGEST_ALGORITHMS = ("MD5", "SHA-256")


def _algorithm(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in _DIGEST_ALGORITHMS:
        raise _Invalid('must be "MD5" or "SHA-256"')
    return value.upper()


def _check(fn: Callable[[Any], Any]) -> dict[str, Any]:
    return {"check": fn}


# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class SipConfig:
    """Where SIP arrives and how floodguard sits in the path."""

    ports: tuple[int, ...] = field(
        default=(5060,), metadata=_check(_list_of(_port, "ports from 1 to 65535"))
    )
    transports: tuple[str, ...] = field(
        default=("udp", "tcp"),
        metadata=_check(_list_of(_one_of("udp", "tcp"), '"udp" or "tcp"')),
    )
    mode: str = field(default="local", metadata=_check(_one_of("local", "forward")))
    # SIP over TLS: not inspected, but banned sources are dropped and the per-source limits
    # apply (floodguard's own registrar tells the guard its TLS outcomes directly)
    tls_ports: tuple[int, ...] = field(
        default=(5061,), metadata=_check(_list_of(_port, "ports from 1 to 65535",
                                                  nonempty=False)))
    # forward mode: the interfaces on the registrar's side. A packet is the registrar's output
    # only when it really arrives from there (never judged by its ports: anyone can send from
    # port 5060), and requests arriving there are not clients'.
    registrar_interfaces: tuple[str, ...] = field(
        default=(), metadata=_check(_list_of(_interface, "interface names", nonempty=False)))


UDP_OVERSIZE_MAX = 65531  # the largest copy NFQUEUE makes (kernel/nfqueue.py COPY_RANGE)


@dataclass(frozen=True)
class LimitsConfig:
    """Per-source rate limits (packets per second) and the global queue budget."""

    register_rate: float = field(default=5.0, metadata=_check(_number_gt(0)))
    register_burst: int = field(default=10, metadata=_check(_int_ge(1)))
    sip_rate: float = field(default=20.0, metadata=_check(_number_gt(0)))
    sip_burst: int = field(default=50, metadata=_check(_int_ge(1)))
    queue_budget: int = field(default=20000, metadata=_check(_int_ge(1)))
    # IPv6 sources are limited, counted, suspended and banned per prefix of this length: one
    # host usually owns a whole /64 and can rotate through it at will.
    ipv6_prefix: int = field(default=64, metadata=_check(_int_ge(8, 128)))
    # An inbound UDP SIP packet of this many bytes or more (IP header included) is dropped
    # unread ("oversize"): RFC 3261 (18.1.1) sends a request over 1,300 bytes over TCP, and
    # multi-kilobyte Contact lists are an attack. At most the guard's queue copy range
    # (nfqueue.COPY_RANGE), so a packet the queue cuts short is always oversize.
    udp_oversize: int = field(default=4016, metadata=_check(_int_ge(1300, UDP_OVERSIZE_MAX)))


@dataclass(frozen=True)
class AdmissionConfig:
    """Admission of unknown sources by the registrar's measured health (floodguard.policy.
    admission): the rate adapts between ``floor`` and ``limits.queue_budget`` (the ceiling);
    ``mode = "static"`` keeps it at ``limits.queue_budget``."""

    mode: str = field(default="auto", metadata=_check(_one_of("auto", "static")))
    floor: int = field(default=100, metadata=_check(_int_ge(1)))
    start: int = field(default=1000, metadata=_check(_int_ge(1)))
    # answers slower than this at the 90th percentile, or more unanswered than max_missing of
    # the admitted requests, cut the rate
    latency_ms: float = field(default=200.0, metadata=_check(_number_gt(0)))
    max_missing: float = field(default=0.05, metadata=_check(_number_gt(0)))


@dataclass(frozen=True)
class SuspensionConfig:
    """VOS3000 endpoint suspension: consecutive proven failures -> suspended."""

    enabled: bool = field(default=True, metadata=_check(_boolean))
    register_retry: int = field(default=6, metadata=_check(_int_ge(1)))
    suspend_time: int = field(default=180, metadata=_check(_int_ge(1)))


@dataclass(frozen=True)
class AccountConfig:
    """Account protection: proven failures on one account from ``sources`` distinct sources
    within ``blacklist.window`` (distributed guessing) protect it for ``suspension.suspend_time``
    (escalating like bans); meanwhile only its known-good (source, account) pairs reach it."""

    protect: bool = field(default=True, metadata=_check(_boolean))
    sources: int = field(default=5, metadata=_check(_int_ge(2)))


@dataclass(frozen=True)
class BlacklistConfig:
    """Dynamic blacklist for spraying and repeat offenders, and the never-banned allow list."""

    auth_failures: int = field(default=5, metadata=_check(_int_ge(1)))
    window: int = field(default=600, metadata=_check(_int_ge(1)))
    ban_time: int = field(default=3600, metadata=_check(_int_ge(1)))
    escalation: float = field(default=2.0, metadata=_check(_number_ge(1)))
    max_ban_time: int = field(default=86400, metadata=_check(_int_ge(1)))
    allow: tuple[str, ...] = field(
        default=("127.0.0.0/8", "::1/128"),
        metadata=_check(_list_of(_cidr, "IP networks in CIDR form", nonempty=False)),
    )


@dataclass(frozen=True)
class ScannerConfig:
    """User-agent substrings of scanners, dropped case-insensitively."""

    user_agents: tuple[str, ...] = field(
        default=("friendly-scanner", "sipvicious", "sipcli", "VaxSIPUserAgent", "pplsip"),
        metadata=_check(_list_of(_nonempty_str, "non-empty strings", nonempty=False)),
    )


@dataclass(frozen=True)
class GatewayConfig:
    """A named group of source networks sharing one requests-per-second budget."""

    name: str = field(default="", metadata=_check(_nonempty_str))
    sources: tuple[str, ...] = field(
        default=(), metadata=_check(_list_of(_cidr, "IP networks in CIDR form"))
    )
    cps: float = field(default=50.0, metadata=_check(_number_gt(0)))


@dataclass(frozen=True)
class FeedConfig:
    """A community blocklist (one IP per line, # comments) imported into the ban set."""

    name: str = field(default="", metadata=_check(_nonempty_str))
    source: str = field(default="", metadata=_check(_nonempty_str))  # path, file:// or http(s)://
    interval: int = field(default=3600, metadata=_check(_int_ge(1)))
    ban_time: int = field(default=7200, metadata=_check(_int_ge(1)))


@dataclass(frozen=True)
class QueueConfig:
    """NFQUEUE numbers, worker count and the fail-open switch."""

    num: int = field(default=0, metadata=_check(_int_ge(0, 65535)))
    workers: int = field(default=1, metadata=_check(_int_ge(1, 64)))
    fail_open: bool = field(default=True, metadata=_check(_boolean))


@dataclass(frozen=True)
class RegistrarConfig:
    """The built-in RFC 3261 registrar."""

    listen: tuple[str, ...] = field(
        default=("0.0.0.0:5060",), metadata=_check(_list_of(_listen, '"ADDRESS:PORT" strings'))
    )
    realm: str = field(default="floodguard", metadata=_check(_nonempty_str))
    expire: int = field(default=3600, metadata=_check(_int_ge(1)))
    min_expire: int = field(default=60, metadata=_check(_int_ge(1)))
    time_to_live: int = field(default=60, metadata=_check(_int_ge(1)))
    accounts: str = field(default="/etc/floodguard/accounts.toml", metadata=_check(_nonempty_str))
    algorithms: tuple[str, ...] = field(
        default=("MD5", "SHA-256"),
        metadata=_check(_list_of(_algorithm, '"MD5" or "SHA-256"')),
    )
    tls_cert: str = field(default="", metadata=_check(_str))
    tls_key: str = field(default="", metadata=_check(_str))
    tls_listen: tuple[str, ...] = field(  # empty: port 5061 on every listen host (with a cert)
        default=(), metadata=_check(_list_of(_listen, '"ADDRESS:PORT" strings', nonempty=False))
    )
    nonce_lifetime: int = field(default=60, metadata=_check(_int_ge(1)))
    max_contacts: int = field(default=10, metadata=_check(_int_ge(1)))
    tcp_idle_timeout: int = field(default=300, metadata=_check(_int_ge(1)))
    max_connections: int = field(default=10000, metadata=_check(_int_ge(1)))
    # TCP/TLS connections one source may hold (an IPv6 source is its /64), so a few addresses
    # cannot take every slot of max_connections.
    max_connections_per_source: int = field(default=32, metadata=_check(_int_ge(1)))
    # Seconds a TCP/TLS peer may leave our answers unread (output over the high-water mark)
    # before the connection is dropped and its buffers freed.
    tcp_write_timeout: float = field(default=10.0, metadata=_check(_number_ge(0.5)))
    # registrar processes sharing the UDP sockets (each account belongs to one); 0: one per CPU
    workers: int = field(default=0, metadata=_check(_int_ge(0)))
    liveness_timeout: float = field(default=4.0, metadata=_check(_number_ge(0.5)))


@dataclass(frozen=True)
class GuardConfig:
    """How the guard acts: "enforce" drops and bans; "monitor" only computes, logs and counts."""

    mode: str = field(default="enforce", metadata=_check(_one_of("enforce", "monitor")))


@dataclass(frozen=True)
class StateConfig:
    """Where bans and bindings persist."""

    path: str = field(default="/var/lib/floodguard/state.db", metadata=_check(_nonempty_str))


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus exposition address."""

    listen: str = field(default="127.0.0.1:9477", metadata=_check(_listen))


FLEET_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel",
                 "redis+cluster", "rediss+cluster")


def _redis_url(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid("must be a Redis URL string (empty: single node)")
    if not value:
        return value
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in FLEET_SCHEMES or not rest.strip("/"):
        raise _Invalid("must be empty or a URL starting with "
                       + ", ".join(f"{s}://" for s in FLEET_SCHEMES))
    return value


def _fleet_name(value: Any) -> str:
    ok = isinstance(value, str) and len(value) <= 200 and not any(
        c.isspace() or c in "*?[]" for c in value)
    if not ok:
        raise _Invalid("must be a string without spaces or *?[] (at most 200 characters)")
    return value


@dataclass(frozen=True)
class FleetConfig:
    """Sharing bans and known-good sources with other floodguard nodes through Redis."""

    redis_url: str = field(default="", metadata=_check(_redis_url))  # empty: single node
    node: str = field(default="", metadata=_check(_fleet_name))  # empty: the host name
    channel: str = field(default="floodguard", metadata=_check(
        lambda v: _fleet_name(_nonempty_str(v))))


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
        except _Invalid as exc:
            errors.append(f"{path}.{key}: {exc}, got {_show(value)}")
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
                f"({_show(value)} vs {_show(table[key])}); set only one"
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


# ---------------------------------------------------------------- rendering


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r}")


def _section_lines(obj: Any) -> list[str]:
    return [f"{f.name} = {_toml_value(getattr(obj, f.name))}" for f in fields(obj)]


def redact_url(url: str) -> str:
    """A URL with its password replaced by ***."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def dumps(cfg: Config, *, redact: bool = False) -> str:
    """Render the effective config as TOML that ``loads`` reads back to an equal Config;
    ``redact`` hides secrets (the Redis password) for display."""
    if redact and cfg.fleet.redis_url:
        cfg = replace(cfg, fleet=replace(cfg.fleet, redis_url=redact_url(cfg.fleet.redis_url)))
    out: list[str] = []
    for name in _SECTIONS:
        out.append(f"[{name}]")
        out.extend(_section_lines(getattr(cfg, name)))
        out.append("")
    for gw in cfg.gateways:
        out.append("[[gateway]]")
        out.extend(_section_lines(gw))
        out.append("")
    for feed in cfg.feeds:
        out.append("[[feed]]")
        out.extend(_section_lines(feed))
        out.append("")
    return "\n".join(out)
