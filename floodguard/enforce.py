"""The one enforcement path: ban, unban and mark known-good on this node.

Every caller goes through an ``Enforcer`` made for it: the guard's own decisions
(``by="guard"``), the operator's ``blacklist`` commands (``"operator"``), blocklist feeds
(``"feed"``) and the fleet link (``"fleet"``). So every change has the same side effects:

======================  ==============================================================
kernel set              the entry, with the ban's time; a refused entry is counted and
                        reported (``set_error``), and the store keeps the ban anyway
store                   the row; journalled for the fleet unless it came from the fleet
command to the guard    queued for a running guard's engine, unless the guard decided it
connections             the source's established TCP connections are forgotten
                        (conntrack), so a ban also cuts a registered TCP/TLS attacker
event                   ``ban``/``suspend``/``unban`` with ``by``; a batch of more than
                        ``EVENT_EACH`` bans is one ``bans`` event with a count and examples
======================  ==============================================================

In monitor mode (``[guard] mode = "monitor"`` or ``run --monitor``) the batch callers (feeds,
the fleet) call ``would_ban_many`` instead: the same events as ``would_ban`` (``would_bans`` for
a large batch), and nothing else.

An endpoint suspension (one AOR from one address: ``suspend_pair``) has no kernel entry and
cuts no connection (the address's other AORs keep working); the guard drops that endpoint's
REGISTERs itself. It is a store row and a ``suspend`` event with ``scope: "aor"``; its end
(``lift_pair``) is a ``suspend_end`` event (reason ``expired``, ``manual``, ``allow-listed``).
Known-good pairs are store rows (``known_pairs``), not yet shared through the fleet.

The run-time allow list (``allow``/``disallow``, ``floodguard allow``) goes the same way: the
kernel allow set (no timeout there: the guard takes an expired entry out, ``apply`` re-syncs),
the store row (journalled for the fleet), an ``allow`` command that makes a running guard re-read
the list, and an ``allow``/``allow_end`` event. A network the config's static list also holds
stays in the kernel set when its run-time entry goes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from floodguard.events import EventLog
from floodguard.kernel.rules import IPSET_MAX_TIMEOUT
from floodguard.kernel.ruleset import port_entry
from floodguard.store import HOLD_ACCOUNT, HOLD_LOCKDOWN, AllowRow, BanRow, Store

ORIGINS = ("guard", "operator", "feed", "fleet")
EVENT_EACH = 20  # bans of one batch logged one by one; more make one summary event

Forget = Callable[[Sequence[str]], None]


class SetWriter(Protocol):
    """Adds and removes entries of floodguard's kernel sets (``SetManager``,
    ``NetlinkSetWriter``)."""

    def add(self, kind: str, ip: str, timeout: int | None = None, /) -> Any: ...

    def remove(self, kind: str, ip: str, /) -> Any: ...


def kernel_seconds(seconds: float) -> int:
    """A ban's time as a kernel set entry's timeout: whole seconds, 1 to the kernel's limit."""
    return min(max(1, math.ceil(seconds)), IPSET_MAX_TIMEOUT)


@dataclass
class BatchResult:
    """What a batch of bans or known-good marks did."""

    done: list[str] = field(default_factory=list)
    full: list[str] = field(default_factory=list)  # the kernel set is full
    failed: list[str] = field(default_factory=list)  # the kernel or the store refused it


class Enforcer:
    """Ban, unban and known-good changes for one caller, with every side effect."""

    def __init__(self, store: Store, sets: SetWriter | None, events: EventLog, *, by: str,
                 forget: Forget | None, wall: Callable[[], float] = time.time) -> None:
        if by not in ORIGINS:
            raise ValueError(f"unknown origin {by!r}")
        self.store = store
        self.sets = sets
        self.events = events
        self.by = by
        self.forget = forget
        self.wall = wall
        self.journal = by != "fleet"  # the fleet's changes are not echoed back to it
        self.tell_guard = by != "guard"
        self.set_errors = 0
        self.last_error: Exception | None = None

    # ------------------------------------------------------------------ kernel only

    def load(self, kind: str, ip: str, seconds: float | None) -> Exception | None:
        """Put an entry the store already holds into the kernel set (restore, repair);
        returns the kernel's refusal, counted and reported, or None."""
        error = self._add(kind, ip, seconds)
        if error is not None:
            self.events.emit("set_error", op="add", set=kind, ip=ip, error=str(error))
        return error

    def _add(self, kind: str, ip: str, seconds: float | None) -> Exception | None:
        if self.sets is None:
            return None
        try:
            self.sets.add(kind, ip, None if seconds is None else kernel_seconds(seconds))
        except Exception as exc:  # noqa: BLE001 — a refused entry must not lose the store row
            self.set_errors += 1
            self.last_error = exc
            return exc
        return None

    def _add_batch(self, kind: str, items: list[tuple[str, float]],
                   result: BatchResult) -> None:
        """Kernel entries for a batch; refusals are counted in ``result`` and reported in one
        ``set_error`` event."""
        from floodguard.kernel import SetFullError

        first: Exception | None = None
        for ip, seconds in items:
            error = self._add(kind, ip, seconds)
            if error is None:
                continue
            first = first or error
            (result.full if isinstance(error, SetFullError) else result.failed).append(ip)
        if first is not None:
            self.events.emit("set_error", op="add", set=kind, count=len(result.full)
                             + len(result.failed), full=len(result.full), error=str(first))

    def _remove(self, kind: str, ip: str) -> bool:
        if self.sets is None:
            return False
        try:
            return bool(self.sets.remove(kind, ip))
        except Exception as exc:  # noqa: BLE001 — the store row goes regardless
            self.set_errors += 1
            self.last_error = exc
            self.events.emit("set_error", op="remove", set=kind, ip=ip, error=str(exc))
            return False

    # ------------------------------------------------------------------ one at a time

    def ban(self, ip: str, seconds: float, *, kind: str, reason: str, aor: str | None = None,
            failures: int = 0, now: float | None = None) -> BanRow:
        """Ban (or suspend) ``ip``, a ban key (``addr.source_key``), for ``seconds``."""
        self.last_error = None
        seconds = kernel_seconds(seconds)
        self.load("ban", ip, seconds)
        row = self.store.put_ban(ip, kind, reason, seconds, aor=aor, failures=failures,
                                 now=self.wall() if now is None else now, journal=self.journal)
        if self.tell_guard:
            self.store.queue_command("ban", ip, seconds, reason)
        if self.forget is not None:
            self.forget([ip])
        self._event(row, seconds)
        return row

    def _event(self, row: BanRow, seconds: float) -> None:
        self.events.emit("suspend" if row.kind == "suspend" else "ban", ip=row.ip, aor=row.aor,
                         reason=row.reason, kind=row.kind, failures=row.failures,
                         seconds=int(seconds), by=self.by)

    def unban(self, ip: str, *, reason: str, journal: bool | None = None) -> bool:
        """Lift a ban; True when the store or the kernel held one. ``journal=False``: a lift
        that stays on this node (its own allow list), so the fleet keeps its ban."""
        self.last_error = None
        in_kernel = self._remove("ban", ip)
        in_store = self.store.delete_ban(ip, journal=self.journal if journal is None
                                         else journal and self.journal)
        if self.tell_guard:
            self.store.queue_command("unban", ip)
        self.events.emit("unban", ip=ip, reason=reason, by=self.by)
        return in_store or in_kernel

    def known(self, ip: str, seconds: float, *, now: float | None = None) -> None:
        """Mark ``ip`` known-good for ``seconds`` (it answered a challenge right)."""
        self.load("known", ip, seconds)
        self.store.put_known(ip, kernel_seconds(seconds),
                             now=self.wall() if now is None else now, journal=self.journal)

    # ------------------------------------------------------------------ run-time allow list

    def allow(self, net: str, seconds: float | None, *, reason: str,
              until: float | None = None, created: float | None = None) -> AllowRow:
        """Allow ``net`` (canonical CIDR) for ``seconds`` (None: until removed, or until the
        fleet's ``until``); the caller lifts the bans it covers."""
        self.last_error = None
        self._add("allow", net, None)
        row = self.store.put_allow(net, reason, seconds, now=self.wall(), until=until,
                                   created=created, journal=self.journal)
        if self.tell_guard:
            self.store.queue_command("allow", net)
        left = row.remaining(self.wall())
        self.events.emit("allow", ip=net, reason=reason,
                         seconds=None if left is None else int(left), by=self.by)
        return row

    def disallow(self, net: str, *, reason: str, static: bool = False) -> bool:
        """End the run-time allow of ``net``; True when the store held it. ``static``: the
        config's list holds it too, so it stays in the kernel set."""
        self.last_error = None
        if not static:
            self._remove("allow", net)
        found = self.store.delete_allow(net, journal=self.journal)
        if self.tell_guard:
            self.store.queue_command("allow", net)
        self.events.emit("allow_end", ip=net, reason=reason, by=self.by)
        return found

    def expire_allow(self, net: str, *, static: bool, expired: bool) -> None:
        """A run-time allow of ``net`` ended: out of the kernel set (unless ``static``: the
        config lists it too; a second removal is harmless) and, when it ran out (``expired``;
        else whoever removed it said so), an ``allow_end`` event. The row goes with the prune."""
        if not static:
            self._remove("allow", net)
        if expired:
            self.events.emit("allow_end", ip=net, reason="expired", by=self.by)

    # ------------------------------------------------------------------ endpoints

    def suspend_pair(self, ip: str, aor: str, seconds: float, *, reason: str,
                     failures: int = 0, level: int = 1, now: float | None = None) -> None:
        """Suspend the endpoint (ip, aor) for ``seconds``: store row and event."""
        seconds = kernel_seconds(seconds)
        self.store.put_pair_ban(ip, aor, reason, seconds, failures=failures, level=level,
                                now=self.wall() if now is None else now, journal=self.journal)
        self.events.emit("suspend", ip=ip, aor=aor, scope="aor", reason=reason, kind="suspend",
                         failures=failures, level=level, seconds=int(seconds), by=self.by)

    def lift_pair(self, ip: str, aor: str | None, *, reason: str) -> bool:
        """End the suspension of (ip, aor) (every one of ip when aor is None); True when the
        store held one."""
        found = self.store.end_pair_ban(ip, aor, now=self.wall(),
                                        journal=self._shares_lift()) > 0
        self.events.emit("suspend_end", ip=ip, aor=aor, scope="aor", reason=reason, by=self.by)
        return found

    def protect_account(self, aor: str, seconds: float, *, sources: int, level: int = 1,
                        reason: str = "distributed-guessing", now: float | None = None) -> None:
        """Protect the account ``aor`` for ``seconds``: store row and event."""
        seconds = kernel_seconds(seconds)
        self.store.put_hold(HOLD_ACCOUNT, aor, reason, seconds, count=sources, level=level,
                            now=self.wall() if now is None else now, journal=self.journal)
        self.events.emit("protect", aor=aor, reason=reason, sources=sources, level=level,
                         seconds=int(seconds), by=self.by)

    def lockdown(self, ip: str, seconds: float, *, failures: int, level: int = 1,
                 reason: str = "spraying", passes: Sequence[tuple[str, int]] | None = None,
                 now: float | None = None) -> None:
        """Lock the shared source ``ip`` down for ``seconds``: store row and event. With
        ``passes`` (the UDP address and port of each of its known-good pairs) also in the
        kernel: those enter the pass set first, then the address the lockdown set, so no phone
        is dropped in between. Without, the guard alone enforces it."""
        seconds = kernel_seconds(seconds)
        self.store.put_hold(HOLD_LOCKDOWN, ip, reason, seconds, count=failures, level=level,
                            now=self.wall() if now is None else now, journal=self.journal)
        kernel = False
        if passes is not None and self.sets is not None:
            refused = [error for peer, port in passes
                       if (error := self._add("pass", port_entry(peer, port), seconds))]
            if refused:  # a phone the kernel could not let through: the guard alone enforces
                self.events.emit("set_error", op="add", set="pass", ip=ip, count=len(refused),
                                 error=str(refused[0]))
            else:
                kernel = self.load("lockdown", ip, seconds) is None
        self.events.emit("lockdown", ip=ip, reason=reason, failures=failures, level=level,
                         seconds=int(seconds), kernel=kernel,
                         passes=len(passes) if passes is not None else None, by=self.by)

    def pass_pair(self, peer: str, port: int, seconds: float) -> None:
        """Let one more known-good pair's UDP (address, port) through a kernel lockdown."""
        self.load("pass", port_entry(peer, port), seconds)

    def end_lockdown(self, ip: str, *, reason: str) -> bool:
        """End the source's lockdown (also in the kernel); True when the store held one."""
        # an operator's end travels as the unban it is part of (blacklist remove IP)
        found = self.store.delete_hold(HOLD_LOCKDOWN, ip)
        self._remove("lockdown", ip)
        self.events.emit("lockdown_end", ip=ip, reason=reason, by=self.by)
        return found

    def end_protection(self, aor: str, *, reason: str) -> bool:
        """End the account's protection; True when the store held one."""
        found = self.store.delete_hold(HOLD_ACCOUNT, aor, journal=self._shares_lift())
        self.events.emit("protect_end", aor=aor, reason=reason, by=self.by)
        return found

    def known_pairs(self, items: Sequence[tuple[str, str, float]], *,
                    now: float | None = None) -> None:
        """Record known-good pairs: (address, AOR, seconds)."""
        now = self.wall() if now is None else now
        self.store.put_known_pairs([(ip, aor, now + kernel_seconds(seconds))
                                    for ip, aor, seconds in items], journal=self.journal)

    def _shares_lift(self) -> bool:
        """An operator's lift goes to the fleet; an expiry (the guard's) needs no message."""
        return self.journal and self.by == "operator"

    # ------------------------------------------------------------------ batches

    def ban_many(self, rows: Sequence[BanRow], *, now: float | None = None) -> BatchResult:
        """Many bans at once (feeds, the fleet): the same effects as ``ban``, with the store
        written in few transactions, one command batch and one connection sweep. Rows keep
        their own ``created`` (the fleet compares it with later unbans)."""
        now = self.wall() if now is None else now
        result = BatchResult()
        self._add_batch("ban", [(row.ip, row.until - now) for row in rows], result)
        refused = set(self.store.put_bans(list(rows), journal=self.journal))
        for ip in refused:  # the kernel must not hold a ban the store knows nothing of
            self._remove("ban", ip)
        result.failed.extend(sorted(refused - set(result.failed)))
        stored = [row for row in rows if row.ip not in refused]
        result.done = [row.ip for row in stored]
        if not stored:
            return result
        if self.tell_guard:
            self.store.queue_commands([("ban", row.ip, kernel_seconds(row.until - now),
                                        row.reason) for row in stored])
        if self.forget is not None:
            self.forget(result.done)
        if len(stored) <= EVENT_EACH:
            for row in stored:
                self._event(row, row.until - now)
        else:
            self.events.emit("bans", count=len(stored), by=self.by,
                             reasons=sorted({row.reason for row in stored})[:EVENT_EACH],
                             examples=result.done[:EVENT_EACH])
        return result

    def would_ban_many(self, rows: Sequence[BanRow], *, now: float | None = None) -> list[str]:
        """Monitor mode: the events ``ban_many`` would emit, as ``would_ban`` / ``would_suspend``
        (one ``would_bans`` summary for more than ``EVENT_EACH``); nothing else changes.
        Returns the addresses."""
        now = self.wall() if now is None else now
        if len(rows) <= EVENT_EACH:
            for row in rows:
                self.events.emit("would_suspend" if row.kind == "suspend" else "would_ban",
                                 ip=row.ip, aor=row.aor, reason=row.reason, kind=row.kind,
                                 failures=row.failures, seconds=int(row.until - now), by=self.by)
        else:
            self.events.emit("would_bans", count=len(rows), by=self.by,
                             reasons=sorted({row.reason for row in rows})[:EVENT_EACH],
                             examples=[row.ip for row in rows[:EVENT_EACH]])
        return [row.ip for row in rows]

    def unban_many(self, ips: Sequence[str], *, reason: str) -> None:
        """Lift many bans (each as ``unban``)."""
        for ip in ips:
            self.unban(ip, reason=reason)

    def known_many(self, items: Sequence[tuple[str, float]], *,
                   now: float | None = None) -> BatchResult:
        """Many known-good marks at once: (address, until)."""
        now = self.wall() if now is None else now
        result = BatchResult()
        self._add_batch("known", [(ip, until - now) for ip, until in items], result)
        refused = set(self.store.put_known_many(list(items), now=now, journal=self.journal))
        for ip in refused:
            self._remove("known", ip)
        result.failed.extend(sorted(refused - set(result.failed)))
        result.done = [ip for ip, _ in items if ip not in refused]
        return result
