"""Accounts file (``[[account]]`` tables): user, password or stored HA1, optional algorithms.

Validation mirrors the config file: every problem is reported at once with its key path.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from floodguard.config import ConfigError

ALGORITHMS = ("MD5", "SHA-256")
_HA1_KEYS = {"MD5": ("ha1_md5", 32), "SHA-256": ("ha1_sha256", 64)}
_KEYS = {"user", "password", "ha1_md5", "ha1_sha256", "algorithms"}
_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True)
class Account:
    """One SIP account; ``ha1`` maps algorithm name to a stored HA1 hex digest."""

    user: str
    password: str | None = None
    ha1: tuple[tuple[str, str], ...] = ()
    algorithms: tuple[str, ...] | None = None  # None: the registrar's order

    def stored_ha1(self, algorithm: str) -> str | None:
        return dict(self.ha1).get(algorithm)

    def can_use(self, algorithm: str) -> bool:
        return self.password is not None or self.stored_ha1(algorithm) is not None

    def offered(self, default_order: tuple[str, ...]) -> tuple[str, ...]:
        """Algorithms to challenge with, in order: the account's own list wins."""
        order = self.algorithms if self.algorithms is not None else default_order
        return tuple(a for a in order if self.can_use(a))


def _account(raw: Any, path: str, errors: list[str]) -> Account | None:
    if not isinstance(raw, Mapping):
        errors.append(f"{path}: must be a table")
        return None
    start = len(errors)
    for key in raw:
        if key not in _KEYS:
            errors.append(f"{path}.{key}: unknown key (known: {', '.join(sorted(_KEYS))})")
    user = raw.get("user")
    if not isinstance(user, str) or not user or any(c in user for c in ' \t\r\n"@:;<>'):
        errors.append(f"{path}.user: must be a SIP user name without spaces, quotes or @:;<>")
    password = raw.get("password")
    if password is not None and (not isinstance(password, str) or not password):
        errors.append(f"{path}.password: must be a non-empty string")
    ha1: list[tuple[str, str]] = []
    for algorithm, (key, size) in _HA1_KEYS.items():
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) != size or not _HEX.match(value.lower()):
            errors.append(f"{path}.{key}: must be {size} hex digits")
            continue
        ha1.append((algorithm, value.lower()))
    if password is None and not any(key in raw for key, _ in _HA1_KEYS.values()):
        errors.append(f"{path}: needs password, ha1_md5 or ha1_sha256")
    algorithms = raw.get("algorithms")
    if algorithms is not None:
        if (
            not isinstance(algorithms, list)
            or not algorithms
            or not all(isinstance(a, str) and a.upper() in ALGORITHMS for a in algorithms)
        ):
            errors.append(f'{path}.algorithms: must be a non-empty list of "MD5" or "SHA-256"')
            algorithms = None
        else:
            algorithms = tuple(dict.fromkeys(a.upper() for a in algorithms))
            if password is None:
                lacking = [a for a in algorithms if a not in dict(ha1)]
                if lacking:
                    errors.append(
                        f"{path}.algorithms: {', '.join(lacking)} needs a password or its own "
                        "stored HA1"
                    )
    if len(errors) != start or not isinstance(user, str):
        return None
    return Account(user=user, password=password, ha1=tuple(ha1), algorithms=algorithms)


def loads(text: str, source: str = "<accounts>") -> dict[str, Account]:
    """Parse an accounts file; returns accounts by user name or raises ConfigError."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: not valid TOML: {exc}"]) from None
    errors: list[str] = []
    for key in data:
        if key != "account":
            errors.append(f"{key}: unknown section (accounts are [[account]] tables)")
    raw_list = data.get("account", [])
    if not isinstance(raw_list, list):
        raise ConfigError(errors + ["account: must be an array of tables ([[account]])"])
    accounts: dict[str, Account] = {}
    for index, raw in enumerate(raw_list):
        account = _account(raw, f"account[{index}]", errors)
        if account is None:
            continue
        if account.user in accounts:
            errors.append(f'account[{index}].user: "{account.user}" is defined more than once')
            continue
        accounts[account.user] = account
    if errors:
        raise ConfigError(errors)
    return accounts


def load(path: str | os.PathLike[str]) -> dict[str, Account]:
    """Read the accounts file at path."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    return loads(text, str(path))
