"""The allow list in force: the config's static ``blacklist.allow`` plus the run-time entries
of the state store (``floodguard allow``, see ``allows``). Small on purpose: the guard (compiled)
imports it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING

from floodguard import addr
from floodguard.config import Config

if TYPE_CHECKING:
    from floodguard.store import Store


def merged(static: Iterable[str], runtime: Iterable[str]) -> tuple[str, ...]:
    """The static allow list followed by the run-time networks it does not already name."""
    return tuple(dict.fromkeys((*static, *runtime)))


def with_runtime(cfg: Config, nets: Iterable[str]) -> Config:
    """``cfg`` whose ``blacklist.allow`` also holds the run-time networks ``nets``."""
    allow = merged(cfg.blacklist.allow, nets)
    if allow == cfg.blacklist.allow:
        return cfg
    return replace(cfg, blacklist=replace(cfg.blacklist, allow=allow))


def effective(cfg: Config, store: Store, now: float | None = None) -> Config:
    """``cfg`` with the store's active run-time allow entries added to ``blacklist.allow``."""
    return with_runtime(cfg, (row.net for row in store.active_allows(now)))


def static_networks(cfg: Config) -> set[str]:
    """The config's static allow list, canonical."""
    return {addr.canonical_network(text) for text in cfg.blacklist.allow}
