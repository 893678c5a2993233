"""Fleet: this node's name, Redis URLs (parsed, redacted) and redis-py clients.

URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS; redis-py query
options such as ``?ssl_ca_certs=/etc/ssl/ca.pem`` pass through), ``unix:///path?db=0``,
``redis+sentinel://[[user]:password@]host:26379[,host:26379...]/service[/db]`` (the password is
the master's; ``?sentinel_password=`` for the sentinels; ``rediss+sentinel://`` for TLS) and
``redis+cluster://[[user]:password@]host:port`` (any seed node; ``rediss+cluster://``).
Passwords never leave this module unredacted (``redact``).
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

from floodguard.config import Config
from floodguard.errors import ConfigurationError

CONNECT_TIMEOUT = 1.0
SOCKET_TIMEOUT = 3.0


class FleetError(ConfigurationError):
    """The fleet is not configured or its Redis URL cannot be used (a configuration error,
    exit 3); the message is one line. An unreachable Redis raises redis-py's or socket errors."""


def node_name(cfg: Config) -> str:
    """This node's name in the fleet: ``[fleet] node``, else the host name."""
    return cfg.fleet.node or socket.gethostname()


def redact(url: str) -> str:
    """The URL with its password replaced by ``***`` (for logs, status and events)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" not in netloc:
        return url
    userinfo, _, hosts = netloc.rpartition("@")
    user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
    shown = f"{user}:***" if ":" in userinfo else "***"
    query = "&".join(
        f"{k}=***" if "password" in k else f"{k}={quote(v[0])}"
        for k, v in parse_qs(parts.query).items())
    return urlunsplit((parts.scheme, f"{shown}@{hosts}", parts.path, query, parts.fragment))


def _common_kwargs(timeout: float, name: str) -> dict[str, Any]:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return {"socket_timeout": timeout, "socket_connect_timeout": min(CONNECT_TIMEOUT, timeout),
            "socket_keepalive": True, "client_name": name,
            # no silent reconnects: redis-py would re-subscribe quietly and the messages
            # published meanwhile would be lost; the link reconnects itself and re-syncs
            "retry": Retry(NoBackoff(), 0)}


def _sentinel(url: str, kwargs: dict[str, Any]) -> Any:
    from redis.sentinel import Sentinel

    scheme, _, rest = url.partition("://")
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    userinfo, _, hosts = netloc.rpartition("@")
    sentinels = []
    for item in filter(None, (h.strip() for h in hosts.split(","))):
        if item.startswith("["):  # [v6]:port
            host, _, port = item[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = item.partition(":")
        sentinels.append((host, int(port) if port else 26379))
    service, _, db = path.partition("/")
    if not service or not sentinels or not all(host for host, _ in sentinels):
        raise FleetError(f"{redact(url)}: expected {scheme}://[password@]host:port[,...]/service")
    query_args = {k: unquote(v[0]) for k, v in parse_qs(query).items()}
    master = dict(kwargs)
    if userinfo:
        user, _, password = userinfo.partition(":")
        if user:
            master["username"] = unquote(user)
        if password:
            master["password"] = unquote(password)
    if db:
        master["db"] = int(db)
    sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    for key in ("sentinel_password", "sentinel_username"):
        if key in query_args:
            sentinel_kwargs[key.removeprefix("sentinel_")] = query_args.pop(key)
    if scheme.startswith("rediss"):
        master["ssl"] = True
        sentinel_kwargs["ssl"] = True
    for key, value in query_args.items():
        if key.startswith("ssl_"):
            master[key] = value
            sentinel_kwargs[key] = value
    return Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs).master_for(service, **master)


def connect(url: str, *, timeout: float = SOCKET_TIMEOUT, name: str = "floodguard") -> Any:
    """A redis-py client for ``url`` (see the module docstring for the schemes)."""
    scheme = url.partition("://")[0].lower()
    kwargs = _common_kwargs(timeout, name)
    try:
        if scheme.endswith("+sentinel"):
            return _sentinel(url, kwargs)
        if scheme.endswith("+cluster"):
            from redis.cluster import RedisCluster

            kwargs.pop("retry")
            return RedisCluster.from_url(url.replace("+cluster", "", 1), **kwargs)
        from redis import Redis

        if scheme == "unix":
            kwargs.pop("socket_keepalive")  # a TCP option
        return Redis.from_url(url, **kwargs)
    except (ValueError, TypeError) as exc:
        raise FleetError(f"{redact(url)}: {exc}") from None


def errors() -> tuple[type[BaseException], ...]:
    """What a failed Redis call raises: redis-py's errors, socket errors and FleetError."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, FleetError)
