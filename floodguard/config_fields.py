"""The config's field checkers: each turns a raw TOML value into its typed form or raises
``Invalid`` saying what the value must be (config.py names the checker of every field).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from typing import Any

from floodguard.errors import ConfigurationError


class Invalid(ConfigurationError):
    """Raised by a field checker: the message says what the value must be."""



def show(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def int_ge(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        if ok and maximum is not None and value > maximum:
            ok = False
        if not ok:
            if maximum is None:
                raise Invalid(f"must be an integer >= {minimum}")
            raise Invalid(f"must be an integer from {minimum} to {maximum}")
        return value

    return check


def number_gt(minimum: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > minimum:
            raise Invalid(f"must be a number > {minimum:g}")
        return float(value)

    return check


def number_ge(minimum: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= minimum:
            raise Invalid(f"must be a number >= {minimum:g}")
        return float(value)

    return check


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("must be true or false")
    return value


def nonempty_str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid("must be a non-empty string")
    return value


def string(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("must be a string")
    return value


def one_of(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise Invalid("must be one of " + ", ".join(f'"{c}"' for c in choices))
        return value

    return check


def list_of(
    item: Callable[[Any], Any], what: str, *, nonempty: bool = True, unique: bool = True
) -> Callable[[Any], tuple[Any, ...]]:
    def check(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list) or (nonempty and not value):
            raise Invalid(f"must be a {'non-empty ' if nonempty else ''}list of {what}")
        out = []
        for element in value:
            try:
                out.append(item(element))
            except Invalid:
                raise Invalid(f"must be a list of {what}") from None
        if unique and len(set(out)) != len(out):
            raise Invalid(f"must be a list of {what} without duplicates")
        return tuple(out)

    return check


def interface(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.:@+-]{1,15}", value):
        raise Invalid("must be a network interface name")
    return value


def port(value: Any) -> int:
    return int_ge(1, 65535)(value)


def cidr(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("must be an IP network in CIDR form")
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise Invalid("must be an IP network in CIDR form") from None


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


def listen(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid('must be "ADDRESS:PORT" (IPv6 as "[ADDRESS]:PORT")')
    try:
        split_listen(value)
    except ValueError:
        raise Invalid('must be "ADDRESS:PORT" (IPv6 as "[ADDRESS]:PORT")') from None
    return value


DIGEST_ALGORITHMS = ("MD5", "SHA-256")


def algorithm(value: Any) -> str:
    if not isinstance(value, str) or value.upper() not in DIGEST_ALGORITHMS:
        raise Invalid('must be "MD5" or "SHA-256"')
    return value.upper()


def check(fn: Callable[[Any], Any]) -> dict[str, Any]:
    return {"check": fn}



FLEET_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel",
                 "redis+cluster", "rediss+cluster")


def redis_url(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("must be a Redis URL string (empty: single node)")
    if not value:
        return value
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in FLEET_SCHEMES or not rest.strip("/"):
        raise Invalid("must be empty or a URL starting with "
                       + ", ".join(f"{s}://" for s in FLEET_SCHEMES))
    return value


def fleet_name(value: Any) -> str:
    ok = isinstance(value, str) and len(value) <= 200 and not any(
        c.isspace() or c in "*?[]" for c in value)
    if not ok:
        raise Invalid("must be a string without spaces or *?[] (at most 200 characters)")
    return value
