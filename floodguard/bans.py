"""Operator view of bans: list, add, remove and explain, over the store and the kernel ban set.

Works whether or not the guard runs: changes go through the node's enforcement path
(``enforce.Enforcer``): the kernel set and the state store at once, a command that a running
guard picks up within a second, the source's TCP connections cut, and an event on stderr.
"""

from __future__ import annotations

import builtins
import sys
import time
from dataclasses import dataclass
from typing import Any

from floodguard import addr
from floodguard.config import Config
from floodguard.enforce import Enforcer, Forget
from floodguard.errors import RefusedError
from floodguard.events import EventLog
from floodguard.store import HOLD_ACCOUNT, HOLD_LOCKDOWN, BanRow, Store

_WHY = {
    "consecutive-failures": "{failures} consecutive failed registrations",
    "spraying": "failed registrations on {failures} distinct accounts within the window",
    "repeat-offender": "suspended again within the window",
}


class BanError(RefusedError):
    """An operator request that cannot be done; the message is one line."""


@dataclass
class BanView:
    """A ban as the operator sees it: the store's row and whether the kernel holds it."""

    ip: str
    row: BanRow | None
    kernel_seconds: int | None  # None: not in the kernel set (or the set is not readable)

    def as_dict(self, now: float) -> dict[str, Any]:
        data: dict[str, Any] = {"ip": self.ip}
        if self.row is not None:
            data.update(self.row.as_dict(now))
        else:
            data.update(kind="unknown", reason="in the kernel set only")
        data["in_kernel"] = self.kernel_seconds is not None
        data["kernel_seconds_left"] = self.kernel_seconds
        return data


def canonical(ip: str) -> str:
    """The canonical form of an operator-given address (``addr.canonical``); BanError if bad."""
    try:
        return addr.canonical(ip)
    except ValueError as exc:
        raise BanError(str(exc)) from None


def allowed_by(cfg: Config, ip: str) -> str | None:
    """The allow-list network that covers ip, if any (``::ffff:a.b.c.d`` is IPv4 on both
    sides); ValueError when ip is not an address."""
    return addr.Networks(cfg.blacklist.allow).covering(ip)


def describe(row: BanRow, now: float) -> str:
    """One sentence saying why and until when a source is banned."""
    template = _WHY.get(row.reason)
    why = template.format(failures=row.failures) if template else row.reason
    aor = f" for {row.aor}" if row.aor else ""
    what = "suspended" if row.kind == "suspend" else "banned"
    until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.until))
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.created))
    return (f"{row.ip} is {what} ({row.kind}) since {since} until {until} "
            f"({int(row.remaining(now))} s left): {why}{aor}")


class BanBook:
    """Store + kernel set operations for the ``floodguard blacklist`` commands."""

    def __init__(self, cfg: Config, store: Store, sets: Any | None, *,
                 events: EventLog | None = None, forget: Forget | None = None) -> None:
        """``sets``: the kernel SetManager, or None when the kernel is not reachable (then no
        connection is cut either). ``forget`` replaces the conntrack sweep (tests)."""
        self.cfg = cfg
        self.store = store
        self.sets = sets
        events = events or EventLog(sys.stderr)
        if forget is None and sets is not None:
            from floodguard.kernel.conntrack import forget_connections

            forget = forget_connections(cfg.limits.ipv6_prefix, events)
        self.enforce = Enforcer(store, sets, events, by="operator", forget=forget)

    def _kernel(self) -> dict[str, int | None]:
        if self.sets is None:
            return {}
        try:
            # an IPv6 source is kept per prefix: "2001:db8:1:2::/64" is the source 2001:db8:1:2::
            return {ip.split("/", 1)[0]: left for ip, left in self.sets.list("ban")}
        except Exception:  # noqa: BLE001 — listing is best effort; the store is the truth
            return {}

    def list(self) -> list[BanView]:
        now = time.time()
        kernel = self._kernel()
        views = [BanView(row.ip, row, kernel.pop(row.ip, None) if row.ip in kernel else None)
                 for row in self.store.active_bans(now=now)]
        for ip in list(kernel):
            views.append(BanView(ip, None, kernel[ip]))
        return views

    def key(self, ip: str) -> str:
        """An operator-given address as bans are kept: canonical, an IPv6 address as the
        network of its limits.ipv6_prefix (the guard counts and bans IPv6 sources that way)."""
        return addr.source_key(canonical(ip), self.cfg.limits.ipv6_prefix)

    def add(self, ip: str, seconds: int, reason: str) -> BanRow:
        given = canonical(ip)
        ip = self.key(given)
        if seconds < 1:
            raise BanError("--ttl must be at least 1 second")
        problem = addr.unbannable(addr.parse(ip))
        if problem is not None:
            raise BanError(f"{ip} is {problem}: it cannot be banned")
        covering = allowed_by(self.cfg, given) or allowed_by(self.cfg, ip)
        if covering is not None:
            raise BanError(f"{given} is in the allow list ({covering}); the allow list always "
                           "wins")
        row = self.enforce.ban(ip, seconds, kind="manual", reason=reason)
        self.kernel_refused(f"{ip} is banned in the store (a running guard and the next "
                             "apply enforce it)")
        return row

    def remove(self, ip: str) -> bool:
        """Lift the ban of ip, its endpoint suspensions and its lockdown (a running guard
        follows)."""
        ip = self.key(ip)
        found = self.enforce.unban(ip, reason="manual")
        for row in self.store.active_pair_bans():
            if row.ip == ip:
                found = self.enforce.lift_pair(ip, row.aor, reason="manual") or found
        if any(hold.key == ip for hold in self.store.active_holds(HOLD_LOCKDOWN)):
            found = self.enforce.end_lockdown(ip, reason="manual") or found
        self.kernel_refused(f"{ip} is no longer banned in the store")
        return found

    def sources(self) -> builtins.list[str]:
        """Every source with something to lift: active bans (store and kernel set), endpoint
        suspensions and lockdowns, each once."""
        found = [row.ip for row in self.store.active_bans()]
        found += list(self._kernel())
        found += [row.ip for row in self.store.active_pair_bans()]
        found += [hold.key for hold in self.store.active_holds(HOLD_LOCKDOWN)]
        return list(dict.fromkeys(found))

    def remove_network(self, network: str | None) -> builtins.list[str]:
        """Lift every ban, suspension and lockdown of a source inside ``network`` (a CIDR;
        an IPv6 source counts by its limits.ipv6_prefix, so a /128 in a banned /64 lifts that
        ban), or of every source when ``network`` is None; returns the sources lifted."""
        net = None
        if network is not None:
            try:
                net = addr.parse_network(network)
            except ValueError as exc:
                raise BanError(str(exc)) from None
        prefix = self.cfg.limits.ipv6_prefix
        lifted = [ip for ip in self.sources()
                  if net is None or addr.key_in(ip, net, prefix)]
        for ip in lifted:
            self.remove(ip)
        return lifted

    def remove_endpoint(self, aor: str,
                        source: str | None = None) -> builtins.list[str]:
        """Lift the endpoint suspensions of account ``aor`` ("user" or "user@domain"), from
        ``source`` only when given, and without ``source`` the account's protection too;
        returns "aor from ip" of each suspension lifted and "aor protection" of each
        protection ended."""
        user = aor.lower()
        key = None if source is None else self.key(source)
        lifted = []
        for row in self.store.active_pair_bans():
            wanted = row.aor == user if "@" in user else row.aor.split("@", 1)[0] == user
            if wanted and (key is None or row.ip == key):
                self.enforce.lift_pair(row.ip, row.aor, reason="manual")
                self.store.queue_command("lift-pair", row.ip, None, row.aor)
                lifted.append(f"{row.aor} from {row.ip}")
        if source is None:
            for hold in self.store.active_holds(HOLD_ACCOUNT):
                wanted = (hold.key == user if "@" in user
                          else hold.key.split("@", 1)[0] == user)
                if wanted:
                    self.enforce.end_protection(hold.key, reason="manual")
                    self.store.queue_command("unprotect", hold.key)
                    lifted.append(f"{hold.key} protection")
        return lifted

    def kernel_refused(self, done: str) -> None:
        if self.enforce.last_error is not None:
            from floodguard.kernel import KernelError

            raise KernelError(f"{done}, but the kernel set refused the change: "
                              f"{self.enforce.last_error}")

    def explain(self, ip: str) -> str:
        """One sentence: why ip is (not) banned."""
        return str(self.explain_data(ip)["text"])

    def explain_data(self, ip: str) -> dict[str, Any]:
        """``explain`` as data (``blacklist explain --json``): ip (the source key), allow (the
        covering allow-list network or None), ban (the store row or None), in_kernel (None
        when the kernel set was not read), kernel_seconds_left, text."""
        ip = self.key(ip)
        now = time.time()
        data: dict[str, Any] = {"ip": ip, "allow": allowed_by(self.cfg, ip), "ban": None,
                                "in_kernel": None, "kernel_seconds_left": None}
        if data["allow"] is not None:
            data["text"] = f"{ip} is in the allow list ({data['allow']}): never limited nor banned"
            return data
        row = self.store.get_ban(ip, now=now)
        kernel = self._kernel()
        if self.sets is not None:
            data["in_kernel"] = ip in kernel
            data["kernel_seconds_left"] = kernel.get(ip)
        if row is None:
            data["text"] = (f"{ip} is in the kernel ban set ({kernel[ip]} s left) with no record"
                            if ip in kernel else f"{ip} is not banned")
            return data
        data["ban"] = row.as_dict(now)
        text = describe(row, now)
        if self.sets is not None and ip not in kernel:
            text += " — WARNING: not in the kernel ban set (run floodguard apply)"
        data["text"] = text
        return data
