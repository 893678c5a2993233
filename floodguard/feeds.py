"""Community blocklists (APIBAN-style): fetch on a schedule, ban every listed address.

A feed is a text file or URL with one IP address per line (``#`` comments and blank lines
ignored; ``ip,anything`` CSV lines take the first field). Each import bans the listed addresses
for ``ban_time`` seconds in the kernel set and the store (reason ``feed:<name>``), so an address
that drops off the list expires by itself. The allow list always wins. A feed that cannot be
fetched or read keeps the bans it already made and is retried at the next interval.
"""

from __future__ import annotations

import ipaddress
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from floodguard.bans import allowed_by
from floodguard.config import Config, FeedConfig
from floodguard.events import EventLog
from floodguard.store import Store

MAX_FEED_BYTES = 16 * 1024 * 1024
FETCH_TIMEOUT = 20


class FeedError(Exception):
    """A feed could not be fetched or read; the message is one line."""


@dataclass
class FeedResult:
    """What one import did."""

    name: str
    banned: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)
    invalid: int = 0
    full: int = 0


def fetch(source: str) -> str:
    """The feed's text, from a path, file:// URL or http(s):// URL."""
    try:
        if source.startswith(("http://", "https://", "file://")):
            request = urllib.request.Request(source, headers={"User-Agent": "floodguard"})
            with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT) as response:  # noqa: S310
                data = response.read(MAX_FEED_BYTES + 1)
        else:
            data = Path(source).read_bytes()[: MAX_FEED_BYTES + 1]
    except (OSError, ValueError) as exc:
        raise FeedError(f"cannot fetch {source}: {exc}") from None
    if len(data) > MAX_FEED_BYTES:
        raise FeedError(f"{source} is larger than {MAX_FEED_BYTES} bytes")
    return data.decode("utf-8", errors="replace")


def parse(text: str) -> tuple[list[str], int]:
    """(addresses in canonical form without duplicates, count of unreadable lines)."""
    seen: dict[str, None] = {}
    invalid = 0
    for line in text.splitlines():
        item = line.split("#", 1)[0].strip().split(",", 1)[0].strip()
        if not item:
            continue
        try:
            seen[str(ipaddress.ip_address(item))] = None
        except ValueError:
            invalid += 1
    return list(seen), invalid


def import_feed(cfg: Config, feed: FeedConfig, store: Store, sets: Any,
                now: float | None = None) -> FeedResult:
    """Fetch one feed and ban what it lists (allow list excepted)."""
    from floodguard.kernel import SetFullError

    addresses, invalid = parse(fetch(feed.source))
    result = FeedResult(feed.name, invalid=invalid)
    now = time.time() if now is None else now
    for ip in addresses:
        if allowed_by(cfg, ip) is not None:
            result.allowed.append(ip)
            continue
        current = store.get_ban(ip, now=now)
        if current is not None and current.until >= now + feed.ban_time:
            continue  # a longer ban (e.g. an escalated blacklist ban) stays as it is
        try:
            sets.add("ban", ip, feed.ban_time)
        except SetFullError:
            result.full += 1
            continue
        store.put_ban(ip, "manual", f"feed:{feed.name}", feed.ban_time, now=now)
        result.banned.append(ip)
    return result


class FeedScheduler:
    """Runs every configured feed at its interval, on a thread of its own so that a slow
    download never holds up the supervisor."""

    def __init__(self, cfg: Config, events: EventLog, store_factory: Any,
                 sets_factory: Any) -> None:
        self.cfg = cfg
        self.events = events
        self.store_factory = store_factory
        self.sets_factory = sets_factory
        self.due: dict[str, float] = {}
        self.stopped = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._loop, name="floodguard-feeds", daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()

    def _loop(self) -> None:
        while not self.stopped.wait(1.0):
            self.check()

    def check(self) -> None:
        cfg = self.cfg
        now = time.monotonic()
        store_factory, sets_factory = self.store_factory, self.sets_factory
        for feed in cfg.feeds:
            if now < self.due.get(feed.name, 0.0):
                continue
            self.due[feed.name] = now + feed.interval
            store, sets = store_factory(), sets_factory()
            try:
                result = import_feed(cfg, feed, store, sets)
            except Exception as exc:  # noqa: BLE001 — a broken feed never stops the guard
                self.events.emit("feed_error", feed=feed.name, error=" ".join(str(exc).split()))
                continue
            finally:
                store.close()
                sets.close()
            self.events.emit("feed_imported", feed=feed.name, banned=len(result.banned),
                             allowed=len(result.allowed), invalid=result.invalid,
                             full=result.full, seconds=feed.ban_time)
