"""The run-time allow list (``floodguard allow add|remove|list``): networks exempt from every
limit and ban, added and removed while floodguard runs, next to the config's static
``blacklist.allow`` (which stays as it is).

An entry lives in the state store (``store_allows``), so it survives restarts and the fleet link
shares it with every node (``fleet.wire``: the ``<channel>:allow`` hash); it is in the kernel
allow set, so its packets skip the rate limits; and a running guard re-reads the list when told
(an ``allow`` command) and when an entry expires, so it never bans an allowed source. Adding an
entry lifts the bans, endpoint suspensions and lockdowns of the sources it covers.

The allow list in force anywhere is the static list plus the active run-time entries
(``allow_list.effective``; the guard uses ``allow_list`` alone, without this module's
operator side).
"""

from __future__ import annotations

import time
from typing import Any

from floodguard import addr
from floodguard.allow_list import effective as effective
from floodguard.allow_list import static_networks
from floodguard.allow_list import with_runtime as with_runtime
from floodguard.bans import BanBook, BanError
from floodguard.config import Config
from floodguard.store import AllowRow


def canonical(text: str) -> str:
    """An operator-given address or network as the allow list keeps it: canonical CIDR
    (``10.0.0.1`` → ``10.0.0.1/32``). BanError for bad text or a /0 (it would exempt everyone)."""
    try:
        net = addr.parse_network(text)
    except ValueError as exc:
        raise BanError(str(exc)) from None
    if net.prefixlen == 0:
        raise BanError(f"{text.strip()} would allow every source: give a narrower network")
    return str(net)


class AllowBook:
    """``floodguard allow`` over a BanBook's store, kernel sets and enforcement path."""

    def __init__(self, cfg: Config, book: BanBook) -> None:
        """``cfg``: the config as loaded (its static list); ``book`` may hold ``effective``."""
        self.cfg = cfg
        self.book = book
        self.store = book.store
        self.enforce = book.enforce

    def add(self, text: str, seconds: float | None, reason: str) -> tuple[AllowRow, list[str]]:
        """Allow the address or network ``text`` for ``seconds`` (None: until removed); returns
        the row and the sources whose bans, suspensions or lockdowns it lifted."""
        net = canonical(text)
        if seconds is not None and seconds < 1:
            raise BanError("--ttl must be at least 1 second")
        row = self.enforce.allow(net, seconds, reason=reason)
        self.book.kernel_refused(f"{net} is allowed in the store (a running guard and the "
                                  "next apply enforce it)")
        lifted = self.book.remove_network(net)
        return row, lifted

    def remove(self, text: str) -> bool:
        """End the run-time allow of ``text``; False when it had none. The static list is not
        touched (a network it holds stays allowed)."""
        net = canonical(text)
        found = self.enforce.disallow(net, reason="manual",
                                      static=net in static_networks(self.cfg))
        self.book.kernel_refused(f"{net} is no longer allowed in the store")
        return found

    def list(self, now: float | None = None) -> list[dict[str, Any]]:
        """The run-time entries in force, then the static ones (``source`` says which)."""
        now = time.time() if now is None else now
        rows = [{**row.as_dict(now), "source": "runtime"}
                for row in self.store.active_allows(now)]
        rows += [{"network": net, "reason": "config", "created": None, "until": None,
                  "remaining": None, "source": "config"}
                 for net in sorted(static_networks(self.cfg))]
        return rows
