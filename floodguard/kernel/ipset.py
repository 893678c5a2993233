"""floodguard's ipsets through pyroute2: ban, known, allow, lockdown, pass (a locked-down
address's known-good ``address,udp:port``) and challenged (written by the kernel itself), each
with an IPv6 twin.

``SetManager`` is the API the CLI and the guard use: callers name a set by kind ("ban", "known",
"allow") and the address picks the IPv4 or IPv6 set. ``restore_sets`` reloads entries saved by
the state store (address, kind, seconds left) after a reboot.

pyroute2's ``IPSet`` drives its own asyncio loop, per thread. A ``SetManager`` therefore opens
one netlink socket per calling thread, and when called from inside a running event loop it does
the work on a helper thread of its own; either way callers just call it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import math
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from floodguard.kernel import KernelError, NotRootError, SetFullError
from floodguard.kernel.ipset_netlink import create_set
from floodguard.kernel.rules import IPSET_MAX_TIMEOUT, SetSpec, allow_entries
from floodguard.kernel.ruleset import PORT_PROTOCOLS, port_entry, split_port_entry

_F = TypeVar("_F", bound=Callable[..., Any])

KINDS = ("ban", "known", "allow", "lockdown", "pass", "challenged")
SET_PREFIX = "floodguard-"

_IPSET_ERR_EXIST = 4103  # element already added / not present (test, del)
_IPSET_ERR_HASH_FULL = 4352  # IPSET_ERR_TYPE_SPECIFIC: the hash reached maxelem
_IPSET_ERR_REFERENCED = 4108
_IPSET_ERR_BUSY = 4100
_IPSET_FLAG_LIST_HEADER = 1 << 2

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class SetInfo:
    """A set's header as the kernel reports it."""

    name: str
    type: str
    family: int
    entries: int
    maxelem: int
    timeout: int | None
    references: int


@dataclass
class RestoreReport:
    """What ``restore_sets`` did with the saved entries."""

    loaded: int = 0
    expired: int = 0
    allowed: int = 0  # ban entries for allow-listed sources, never loaded
    invalid: int = 0
    full: int = 0


def _family_of(value: str) -> int:
    if "," in value:  # address,proto:port
        return ipaddress.ip_address(split_port_entry(value)[0]).version
    return ipaddress.ip_network(value, strict=False).version


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None


def _attr(msg: Any, name: str) -> Any:
    return msg.get_attr(name)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _outside_loop(method: _F) -> _F:
    """Run the method on the manager's helper thread when called inside a running event loop."""

    @functools.wraps(method)
    def wrapper(self: SetManager, *args: Any, **kwargs: Any) -> Any:
        if _in_event_loop():
            with self._lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="floodguard-ipset")
            return self._executor.submit(method, self, *args, **kwargs).result()
        return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class SetManager:
    """Create, fill, read and destroy floodguard's ipsets (a netlink socket per thread)."""

    def __init__(self, specs: Sequence[SetSpec]) -> None:
        self.specs = tuple(specs)
        self._by_kind = {(s.kind, s.family): s for s in self.specs}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._socks: list[Any] = []
        self._executor: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------ plumbing

    def __enter__(self) -> SetManager:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every socket this manager opened (call once, when all users are done)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            # A socket of a thread that is gone may fail to close: nothing is left to release.
            with contextlib.suppress(Exception):
                sock.close()
        self._local = threading.local()

    @property
    def ipset(self) -> Any:
        sock = getattr(self._local, "sock", None)
        if sock is None:
            from pyroute2.ipset import IPSet

            try:
                sock = IPSet()
            except PermissionError:
                raise NotRootError("ipset needs root (CAP_NET_ADMIN)") from None
            except Exception as exc:  # netlink errors from a kernel without ipset support
                if _code(exc) == errno.EPERM:
                    raise NotRootError("ipset needs root (CAP_NET_ADMIN)") from None
                raise KernelError(f"ipset is not available in this kernel: {exc}") from None
            self._local.sock = sock
            with self._lock:
                self._socks.append(sock)
        return sock

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KernelError:
            raise
        except Exception as exc:
            code = _code(exc)
            if code == errno.EPERM:
                raise NotRootError("ipset needs root (CAP_NET_ADMIN)") from None
            if code == errno.ENOENT:
                raise KernelError(f"{what}: set does not exist (run floodguard apply)") from None
            raise KernelError(f"{what}: {exc}") from None

    def spec(self, kind: str, family: int) -> SetSpec:
        """The set of ``kind`` for address family 4 or 6."""
        try:
            return self._by_kind[(kind, family)]
        except KeyError:
            raise KernelError(f"unknown set kind {kind!r} (known: {', '.join(KINDS)})") from None

    def spec_for(self, kind: str, value: str) -> SetSpec:
        try:
            return self.spec(kind, _family_of(value))
        except ValueError:
            raise KernelError(f"not an IP address: {value!r}") from None

    # ------------------------------------------------------------ sets

    @_outside_loop
    def info(self, name: str) -> SetInfo | None:
        """The header of a set, or None when it does not exist."""
        try:
            messages = list(self.ipset.list(name, flags=_IPSET_FLAG_LIST_HEADER))
        except Exception as exc:
            if _code(exc) == errno.ENOENT:
                return None
            return self._call(f"ipset list {name}", _raise, exc)
        if not messages:
            return None
        msg = messages[0]
        data = _attr(msg, "IPSET_ATTR_DATA")
        return SetInfo(
            name=name,
            type=_attr(msg, "IPSET_ATTR_TYPENAME"),
            family=4 if _attr(msg, "IPSET_ATTR_FAMILY") == socket.AF_INET else 6,
            entries=_attr(data, "IPSET_ATTR_ELEMENTS") or 0,
            maxelem=_attr(data, "IPSET_ATTR_MAXELEM") or 0,
            timeout=_attr(data, "IPSET_ATTR_TIMEOUT"),
            references=_attr(data, "IPSET_ATTR_REFERENCES") or 0,
        )

    @_outside_loop
    def names(self) -> list[str]:
        """Every set in this network namespace whose name starts with ``floodguard-``."""
        names = []
        for msg in self._call("ipset list", lambda: list(
                self.ipset.list(flags=_IPSET_FLAG_LIST_HEADER))):
            name = _attr(msg, "IPSET_ATTR_SETNAME")
            if name and name.startswith(SET_PREFIX) and name not in names:
                names.append(name)
        return names

    def _create(self, spec: SetSpec, name: str | None = None) -> None:
        if spec.netmask is not None:  # pyroute2's create has no netmask option
            self._call(f"ipset create {name or spec.name}", create_set, spec, name)
            return
        self._call(
            f"ipset create {name or spec.name}", self.ipset.create, name or spec.name,
            stype=spec.type, family=socket.AF_INET if spec.family == 4 else socket.AF_INET6,
            maxelem=spec.maxelem, hashsize=spec.hashsize, timeout=spec.timeout,
        )

    def _matches(self, spec: SetSpec, info: SetInfo) -> bool:
        return (info.type == spec.type and info.family == spec.family
                and info.maxelem == spec.maxelem
                and (info.timeout is None) == (spec.timeout is None)
                and (spec.timeout is None or info.timeout == spec.timeout))

    @_outside_loop
    def ensure(self) -> list[str]:
        """Create missing sets; rebuild a set whose type or limits changed, keeping its entries.

        Returns the names of the sets that were created.
        """
        created = []
        for spec in self.specs:
            info = self.info(spec.name)
            if info is None:
                self._create(spec)
                created.append(spec.name)
            elif not self._matches(spec, info):
                self._rebuild(spec, info)
        return created

    def _rebuild(self, spec: SetSpec, info: SetInfo) -> None:
        # A set in use by rules cannot be destroyed, but it can be swapped with a fresh one.
        if info.type != spec.type or info.family != spec.family:
            raise KernelError(
                f"ipset {spec.name} exists as {info.type} family "
                f"{'inet' if info.family == 4 else 'inet6'}; expected {spec.type} "
                f"{spec.inet} (run floodguard remove first)")
        temp = spec.name[:27] + "-new"
        if self.info(temp) is not None:
            self._call(f"ipset destroy {temp}", self.ipset.destroy, temp)
        self._create(spec, temp)
        try:
            for value, left in self._entries(spec.name):
                timeout = None if spec.timeout is None else (left or spec.timeout)
                try:
                    self._add(spec, temp, value, timeout)
                except SetFullError:
                    break
            self._call(f"ipset swap {spec.name}", self.ipset.swap, spec.name, temp)
        finally:
            self._call(f"ipset destroy {temp}", self.ipset.destroy, temp)

    @_outside_loop
    def destroy(self, names: Iterable[str] | None = None) -> list[str]:
        """Destroy our sets (all of them by default); returns the names destroyed."""
        targets = list(names) if names is not None else list(
            dict.fromkeys([*(s.name for s in self.specs), *self.names()]))
        destroyed = []
        for name in targets:
            if self.info(name) is None:
                continue
            try:
                self.ipset.destroy(name)
            except Exception as exc:
                if _code(exc) in (_IPSET_ERR_BUSY, _IPSET_ERR_REFERENCED, errno.EBUSY):
                    raise KernelError(
                        f"ipset {name} is still used by other rules; left in place") from None
                self._call(f"ipset destroy {name}", _raise, exc)
            destroyed.append(name)
        return destroyed

    @_outside_loop
    def flush(self, kind: str | None = None) -> None:
        """Empty the sets of one kind (both families), or all our sets."""
        for spec in self.specs:
            if kind is None or spec.kind == kind:
                self._call(f"ipset flush {spec.name}", self.ipset.flush, spec.name)

    @_outside_loop
    def sizes(self) -> list[SetInfo]:
        """Headers of our sets that exist, in spec order."""
        return [info for spec in self.specs if (info := self.info(spec.name)) is not None]

    # ------------------------------------------------------------ entries

    def _entry(self, spec: SetSpec, value: str) -> tuple[Any, str]:
        if spec.type == "hash:ip,port":
            from pyroute2.ipset import PortEntry

            address, proto, port = split_port_entry(value)
            return (address, PortEntry(port, protocol=proto)), "ip,port"
        if spec.type == "hash:net":
            if spec.prefix is not None and "/" not in value:
                value = f"{value}/{spec.prefix}"  # a source kept per prefix
            net = ipaddress.ip_network(value, strict=False)
            return f"{net.network_address}/{net.prefixlen}", "net"
        return str(ipaddress.ip_address(value)), "ip"

    def _add(self, spec: SetSpec, name: str, value: str, timeout: int | None) -> None:
        entry, etype = self._entry(spec, value)
        family = socket.AF_INET if spec.family == 4 else socket.AF_INET6
        try:
            # Without NLM_F_EXCL an existing entry is updated, so a repeat ban renews its timeout.
            self.ipset.add(name, entry, family=family, exclusive=False, timeout=timeout,
                           etype=etype)
        except Exception as exc:
            if _code(exc) == _IPSET_ERR_HASH_FULL:
                raise SetFullError(name, entry) from None
            self._call(f"ipset add {name} {entry}", _raise, exc)

    @_outside_loop
    def add(self, kind: str, address: str, timeout: float | None = None) -> None:
        """Add (or renew) an address; ``timeout`` seconds, None for the set default, 0 forever.

        Raises SetFullError when the set is at maxelem.
        """
        spec = self.spec_for(kind, address)
        seconds: int | None = None
        if spec.timeout is not None and timeout is not None:
            seconds = min(max(0, math.ceil(timeout)), IPSET_MAX_TIMEOUT)
        self._add(spec, spec.name, address, seconds)

    @_outside_loop
    def remove(self, kind: str, address: str) -> bool:
        """Delete an address; False when it was not in the set."""
        spec = self.spec_for(kind, address)
        entry, etype = self._entry(spec, address)
        family = socket.AF_INET if spec.family == 4 else socket.AF_INET6
        try:
            self.ipset.delete(spec.name, entry, family=family, etype=etype)
        except Exception as exc:
            if _code(exc) == _IPSET_ERR_EXIST:
                return False
            self._call(f"ipset del {spec.name} {entry}", _raise, exc)
        return True

    @_outside_loop
    def test(self, kind: str, address: str) -> bool:
        """Whether the set matches the address (for allow: whether a network contains it)."""
        spec = self.spec_for(kind, address)
        entry, etype = self._entry(spec, address)
        family = socket.AF_INET if spec.family == 4 else socket.AF_INET6
        return bool(self._call(f"ipset test {spec.name}", self.ipset.test, spec.name, entry,
                               family=family, etype=etype))

    def _entries(self, name: str) -> Iterator[tuple[str, int | None]]:
        for msg in self._call(f"ipset list {name}", lambda: list(self.ipset.list(name))):
            adt = _attr(msg, "IPSET_ATTR_ADT")
            if adt is None:
                continue
            for data in adt.get_attrs("IPSET_ATTR_DATA"):
                ip_from = _attr(data, "IPSET_ATTR_IP_FROM")
                address = (_attr(ip_from, "IPSET_ATTR_IPADDR_IPV4")
                           or _attr(ip_from, "IPSET_ATTR_IPADDR_IPV6"))
                cidr = _attr(data, "IPSET_ATTR_CIDR")
                if cidr is not None:
                    address = f"{address}/{cidr}"
                # pyroute2 names attribute 4 by its last alias
                port = _attr(data, "IPSET_ATTR_PORT_FROM") or _attr(data, "IPSET_ATTR_PORT")
                if port is not None:
                    names = {n: p for p, n in PORT_PROTOCOLS.items()}
                    proto = names.get(_attr(data, "IPSET_ATTR_PROTO"), "udp")
                    address = port_entry(address, port, proto)
                yield address, _attr(data, "IPSET_ATTR_TIMEOUT")

    @_outside_loop
    def list(self, kind: str) -> list[tuple[str, int | None]]:
        """(address, seconds left) for both families; seconds left is None without timeouts.

        Allow-set entries are networks ("10.0.0.0/8").
        """
        out: list[tuple[str, int | None]] = []
        for family in (4, 6):
            out += list(self._entries(self.spec(kind, family).name))
        return out

    @_outside_loop
    def sync_allow(self, networks: Iterable[str]) -> tuple[list[str], list[str]]:
        """Make the allow sets hold exactly ``networks``; returns (added, removed)."""
        wanted = list(networks)
        added: list[str] = []
        removed: list[str] = []
        for family in (4, 6):
            spec = self.spec("allow", family)
            want = {ipaddress.ip_network(n) for n in allow_entries(wanted, family)}
            have = {ipaddress.ip_network(a, strict=False) for a, _ in self._entries(spec.name)}
            for net in sorted(have - want, key=str):
                self.remove("allow", str(net))
                removed.append(str(net))
            for net in sorted(want - have, key=str):
                self.add("allow", str(net))
                added.append(str(net))
        return added, removed


def _raise(exc: BaseException) -> None:
    raise exc


def restore_sets(
    entries: Iterable[tuple[str, str, float]], manager: SetManager,
) -> RestoreReport:
    """Load saved (address, kind, seconds_left) entries, e.g. from the state store at boot.

    Expired entries are skipped, and so are bans of allow-listed sources; a full set is counted
    and the rest of the entries are still tried (other sets may have room).
    """
    report = RestoreReport()
    for address, kind, seconds_left in entries:
        if seconds_left <= 0:
            report.expired += 1
            continue
        try:
            if kind == "ban" and manager.test("allow", address):
                report.allowed += 1
                continue
            manager.add(kind, address, seconds_left)
        except SetFullError:
            report.full += 1
            continue
        except KernelError:
            if kind not in KINDS or not _is_address(address):
                report.invalid += 1
                continue
            raise
        report.loaded += 1
    return report


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
