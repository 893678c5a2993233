"""Community blocklists (APIBAN-style): fetch on a schedule, ban every listed address.

A feed is a text file or URL with one IP address per line (``#`` comments and blank lines
ignored; ``ip,anything`` CSV lines take the first field). Each import bans the listed addresses
for ``ban_time`` seconds through the node's enforcement path (``enforce.Enforcer``: kernel set,
store, guard command, connections cut, event; reason ``feed:<name>``), so an address
that drops off the list expires by itself. The allow list always wins. A line that is not one
bannable address (junk, a network, 0.0.0.0, multicast, loopback, over-long) is skipped on its
own and counted (``feed_imported`` event: ``skipped`` and a few ``skipped_examples``); the rest
is imported. A feed that cannot be fetched or read keeps the bans it already made and is retried
at the next interval.

In monitor mode (``[guard] mode = "monitor"``, or ``run --monitor``) a feed bans nothing: each
import says what it would ban (``would_ban`` events with ``by: "feed"``, one ``would_bans``
summary for a long list) and ``feed_imported`` carries ``monitor: true`` and ``would_ban``.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from floodguard import addr
from floodguard.allow_list import effective
from floodguard.config import Config, FeedConfig
from floodguard.enforce import Enforcer, Forget
from floodguard.errors import FloodguardError
from floodguard.events import EventLog
from floodguard.store import BanRow, Store

MAX_FEED_BYTES = 16 * 1024 * 1024
FETCH_TIMEOUT = 20


class FeedError(FloodguardError):
    """A feed could not be fetched or read; the message is one line."""


MAX_LINE = 512  # longer lines are skipped unread (a feed line is an address and a comment)
EXAMPLES = 5  # skipped lines quoted in the feed_imported event


@dataclass
class Skipped:
    """Lines or addresses left out of an import: how many, and the first few with the reason."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, where: str, why: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES:
            self.examples.append(f"{where}: {why}")


@dataclass
class FeedList:
    """A parsed feed: its addresses (canonical, without duplicates) and the lines skipped."""

    addresses: list[str] = field(default_factory=list)
    skipped: Skipped = field(default_factory=Skipped)


@dataclass
class FeedResult:
    """What one import did."""

    name: str
    banned: list[str] = field(default_factory=list)
    would_ban: list[str] = field(default_factory=list)  # monitor mode: banned nothing
    allowed: list[str] = field(default_factory=list)
    skipped: Skipped = field(default_factory=Skipped)  # bad lines, and addresses the kernel refused
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


def _clip(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "…")


def parse(text: str) -> FeedList:
    """The feed's addresses in canonical form (``::ffff:a.b.c.d`` as IPv4) without duplicates.

    A line that is not one bannable address (junk, a network, 0.0.0.0 or ``::``, multicast,
    loopback, the broadcast address, or longer than MAX_LINE) is skipped on its own.
    """
    out = FeedList()
    seen: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if len(line) > MAX_LINE:
            out.skipped.add(f"line {number}", f"longer than {MAX_LINE} characters")
            continue
        item = line.split("#", 1)[0].strip().split(",", 1)[0].strip()
        if not item:
            continue
        try:
            address = addr.parse(item)
        except ValueError as exc:
            out.skipped.add(f"line {number}", str(exc))
            continue
        problem = addr.unbannable(address)
        if problem is not None:
            out.skipped.add(f"line {number}", f"{_clip(item)} is {problem}")
            continue
        seen[str(address)] = None
    out.addresses = list(seen)
    return out


def import_feed(cfg: Config, feed: FeedConfig, store: Store, sets: Any,
                now: float | None = None, *, events: EventLog | None = None,
                forget: Forget | None = None) -> FeedResult:
    """Fetch one feed and ban what it lists (allow list excepted) through the enforcement path
    (``enforce.Enforcer``, ``by="feed"``). Bad lines are skipped one by one and counted in
    ``result.skipped``; an address the kernel refuses is counted there too, and its ban stays in
    the store (a running guard and the next apply enforce it), as every other ban path does.
    ``forget`` cuts the banned sources' connections (``kernel.conntrack.forget_connections``).
    In monitor mode nothing is banned: ``result.would_ban`` and ``would_ban`` events instead."""
    listed = parse(fetch(feed.source))
    result = FeedResult(feed.name, skipped=listed.skipped)
    now = time.time() if now is None else now
    # the allow list in force: the config's and the run-time one (floodguard allow)
    allow = addr.Networks(effective(cfg, store, now).blacklist.allow)
    events = events or EventLog()
    enforce = Enforcer(store, sets, events, by="feed", forget=forget)
    reason = f"feed:{feed.name}"
    # an IPv6 source is banned and kept as its limits.ipv6_prefix network, as every other
    # path keeps it, so that `blacklist remove` of the listed address lifts it
    keys: dict[str, None] = {}
    for given in listed.addresses:
        if allow.covering(given) is not None:
            result.allowed.append(given)
            continue
        keys[addr.source_key(given, cfg.limits.ipv6_prefix)] = None
    current = store.ban_spans(list(keys))
    rows = []
    for ip in keys:
        if allow.covering(ip) is not None:
            result.allowed.append(ip)
            continue
        span = current.get(ip)
        if span is not None and span[1] >= now + feed.ban_time:
            continue  # a longer ban (e.g. an escalated blacklist ban) stays as it is
        rows.append(BanRow(ip, "manual", reason, None, 0, now, now + feed.ban_time))
    if cfg.guard.mode == "monitor":
        result.would_ban = enforce.would_ban_many(rows, now=now)
        return result
    done = enforce.ban_many(rows, now=now)
    refused = {*done.full, *done.failed}
    result.banned = [ip for ip in done.done if ip not in refused]
    result.full = len(done.full)
    for ip in done.failed:
        result.skipped.add(ip, " ".join(str(enforce.last_error).split()))
    return result


class FeedScheduler:
    """Runs every configured feed at its interval, on a thread of its own so that a slow
    download never holds up the supervisor."""

    def __init__(self, cfg: Config, events: EventLog, store_factory: Any,
                 sets_factory: Any, *, forget: Forget | None = None) -> None:
        """``forget`` cuts banned sources' connections (``conntrack.forget_connections``)."""
        self.cfg = cfg
        self.events = events
        self.forget = forget
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
                result = import_feed(cfg, feed, store, sets, events=self.events,
                                     forget=self.forget)
            except Exception as exc:  # noqa: BLE001 — a broken feed never stops the guard
                self.events.emit("feed_error", feed=feed.name, error=" ".join(str(exc).split()))
                continue
            finally:
                store.close()
                sets.close()
            monitor = ({"monitor": True, "would_ban": len(result.would_ban)}
                       if cfg.guard.mode == "monitor" else {})
            self.events.emit("feed_imported", feed=feed.name, banned=len(result.banned),
                             **monitor, allowed=len(result.allowed),
                             skipped=result.skipped.count,
                             skipped_examples=result.skipped.examples or None,
                             full=result.full, seconds=feed.ban_time)
