"""An in-memory kernel for the unit tests: floodguard's ipsets without root or netlink.

``KernelSets`` stands in for both the product's set interfaces, ``SetManager`` (CLI, bans,
fleet, feeds) and ``NetlinkSetWriter`` (the guard's hot path): ``add``/``remove``/``test``/
``list``/``sizes``/``flush``/``close``, with their errors (``SetFullError``, ``KernelError``).
The sets are the real ones ``render(cfg)`` describes, and entries are kept the way the kernel
keeps them: an IPv6 source in a per-prefix ``hash:net`` set becomes its network
(``"2001:db8::/64"``), an add without a timeout takes the set's default, an add to a full set
raises but a renewal of an entry already there does not (as ``ip_set_hash_gen.h`` does). Time
does not pass: ``list`` reports the timeout an entry was given.

Tests read ``entries`` ({(kind, entry): timeout}) and can make the kernel refuse: ``maxelem``
(every set holds at most that many entries) and ``refuse`` (address -> the error to raise).
The ``kernel_sets`` fixture (tests/conftest.py) gives one for the default configuration.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from types import TracebackType

from floodguard.config import Config
from floodguard.kernel import KernelError, SetFullError
from floodguard.kernel.ipset import SetInfo
from floodguard.kernel.rules import IPSET_MAX_TIMEOUT, SetSpec, render
from floodguard.kernel.ruleset import PORT_PROTOCOLS, port_entry, split_port_entry


@functools.cache
def _default_specs() -> tuple[SetSpec, ...]:
    return tuple(render(Config()).sets)


class KernelSets:
    """floodguard's kernel sets in memory, with the SetManager/NetlinkSetWriter interface."""

    def __init__(self, cfg: Config | None = None, *, maxelem: int | None = None,
                 refuse: dict[str, Exception] | None = None) -> None:
        self.specs = _default_specs() if cfg is None else tuple(render(cfg).sets)
        self._by_kind = {(s.kind, s.family): s for s in self.specs}
        self.maxelem = maxelem
        self.refuse: dict[str, Exception] = dict(refuse or {})
        self.entries: dict[tuple[str, str], int | None] = {}
        self.closed = False

    # ------------------------------------------------------------ plumbing

    def __enter__(self) -> KernelSets:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True

    @staticmethod
    def writer(sets: KernelSets) -> KernelSets:
        """The ``writer_factory`` for code that opens a ``NetlinkSetWriter`` beside its set
        manager (the fleet): the fake is its own writer."""
        return sets

    def spec_for(self, kind: str, address: str) -> SetSpec:
        try:
            if "," in address:  # address,udp:port (a hash:ip,port set)
                family = ipaddress.ip_address(split_port_entry(address)[0]).version
            else:
                family = ipaddress.ip_network(address, strict=False).version
        except ValueError:
            raise KernelError(f"not an IP address: {address!r}") from None
        try:
            return self._by_kind[(kind, family)]
        except KeyError:
            raise KernelError(f"unknown set kind {kind!r}") from None

    def entry(self, kind: str, address: str) -> str:
        """The form the kernel keeps ``address`` in, in the set of ``kind``."""
        spec = self.spec_for(kind, address)
        if spec.type == "hash:ip,port":
            ip, proto, port = split_port_entry(address)
            return port_entry(ip, port, {n: name for name, n in PORT_PROTOCOLS.items()}[proto])
        if "," in address:
            raise KernelError(f"{spec.name} holds addresses, not {address!r}")
        if spec.type == "hash:net":
            if spec.prefix is not None and "/" not in address:
                address = f"{address}/{spec.prefix}"
            net = ipaddress.ip_network(address, strict=False)
            return f"{net.network_address}/{net.prefixlen}"
        return str(ipaddress.ip_address(address))

    def _count(self, spec: SetSpec) -> int:
        return sum(1 for kind, entry in self.entries
                   if kind == spec.kind and self.spec_for(kind, entry).family == spec.family)

    # ------------------------------------------------------------ entries

    def add(self, kind: str, address: str, timeout: float | None = None) -> None:
        """Add or renew; ``timeout`` None takes the set's default. Raises like the kernel."""
        if address in self.refuse:
            raise self.refuse[address]
        spec = self.spec_for(kind, address)
        key = (kind, self.entry(kind, address))
        limit = spec.maxelem if self.maxelem is None else self.maxelem
        if key not in self.entries and self._count(spec) >= limit:
            raise SetFullError(spec.name, key[1])
        if spec.timeout is None:
            seconds = None
        elif timeout is None:
            seconds = spec.timeout
        else:
            seconds = min(max(0, math.ceil(timeout)), IPSET_MAX_TIMEOUT)
        self.entries[key] = seconds

    def remove(self, kind: str, address: str) -> bool:
        """Delete; False when it was not in the set."""
        key = (kind, self.entry(kind, address))
        if key not in self.entries:
            return False
        del self.entries[key]
        return True

    def test(self, kind: str, address: str) -> bool:
        """Whether the set matches the address (a network entry matches what it contains)."""
        self.spec_for(kind, address)
        wanted = ipaddress.ip_network(address, strict=False)
        if "," in address:
            return (kind, self.entry(kind, address)) in self.entries
        for have_kind, entry in self.entries:
            if have_kind != kind:
                continue
            net = ipaddress.ip_network(entry, strict=False)
            if net.version == wanted.version and wanted.subnet_of(net):  # type: ignore[arg-type]
                return True
        return False

    def list(self, kind: str) -> list[tuple[str, int | None]]:
        """(entry, timeout) of both families, IPv4 first, as SetManager.list gives them."""
        if not any(s.kind == kind for s in self.specs):
            raise KernelError(f"unknown set kind {kind!r}")
        out = [(entry, left) for (k, entry), left in self.entries.items() if k == kind]
        return sorted(out, key=lambda item: ":" in item[0])

    def addresses(self, kind: str) -> set[str]:
        """The entries of one kind, without timeouts."""
        return {entry for entry, _ in self.list(kind)}

    def flush(self, kind: str | None = None) -> None:
        for key in [k for k in self.entries if kind is None or k[0] == kind]:
            del self.entries[key]

    # ------------------------------------------------------------ sets

    def info(self, name: str) -> SetInfo | None:
        for spec in self.specs:
            if spec.name == name:
                return SetInfo(name=name, type=spec.type, family=spec.family,
                               entries=self._count(spec), maxelem=spec.maxelem,
                               timeout=spec.timeout, references=0)
        return None

    def sizes(self) -> list[SetInfo]:
        """Headers of the sets, in spec order."""
        return [info for spec in self.specs if (info := self.info(spec.name)) is not None]
