"""Fast CIDR membership for IPv4 and IPv6: the allow list and gateway groups.

Addresses are parsed with ``socket.inet_pton`` into integers and matched against one hash table
per prefix length present, longest prefix first, so a lookup costs one parse plus one dict probe
per distinct prefix length (typically one or two) — far cheaper than ``ipaddress`` objects.
IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``) match IPv4 networks.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Generic, TypeVar

V = TypeVar("V")

_AF_INET = socket.AF_INET
_AF_INET6 = socket.AF_INET6
_inet_pton = socket.inet_pton
_from_bytes = int.from_bytes
_MAPPED_PREFIX = 0xFFFF  # ::ffff:0:0/96 >> 32

ParsedIp = tuple[int, int]  # (4 or 6, address as an integer)


def pack_ip(ip: str) -> ParsedIp | None:
    """(version, integer) for an address string, None when it is not an IP address.

    IPv4-mapped IPv6 addresses come back as IPv4. A zone suffix (``fe80::1%eth0``) is ignored.
    """
    try:
        if ":" in ip:
            if "%" in ip:
                ip = ip.split("%", 1)[0]
            value = _from_bytes(_inet_pton(_AF_INET6, ip), "big")
            if value >> 32 == _MAPPED_PREFIX:
                return 4, value & 0xFFFFFFFF
            return 6, value
        return 4, _from_bytes(_inet_pton(_AF_INET, ip), "big")
    except (OSError, ValueError, TypeError):
        return None


class NetMap(Generic[V]):
    """CIDR -> value, longest-prefix match. Values must not be None."""

    __slots__ = ("_v4", "_v6", "_size")

    def __init__(self, items: Iterable[tuple[str, V]] = (), v6_prefix: int = 128) -> None:
        """``v6_prefix``: an IPv6 network longer than this covers its whole /v6_prefix (the
        engine keys IPv6 sources by that prefix, so an entry cannot be narrower)."""
        v4: dict[int, dict[int, V]] = {}
        v6: dict[int, dict[int, V]] = {}
        size = 0
        for cidr, value in items:
            if value is None:
                raise ValueError("NetMap values must not be None")
            net = ipaddress.ip_network(cidr, strict=False)
            if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and (
                int(net.network_address) >> 32 == _MAPPED_PREFIX
            ):
                net = ipaddress.ip_network(
                    (int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96)
                )
            if net.version == 6 and net.prefixlen > v6_prefix:
                net = net.supernet(new_prefix=v6_prefix)
            bits = net.max_prefixlen
            shift = bits - net.prefixlen
            table = v4 if net.version == 4 else v6
            # First writer wins for an exact duplicate network.
            table.setdefault(shift, {}).setdefault(int(net.network_address) >> shift, value)
            size += 1
        # Smallest shift = longest prefix first.
        self._v4: tuple[tuple[int, dict[int, V]], ...] = tuple(sorted(v4.items()))
        self._v6: tuple[tuple[int, dict[int, V]], ...] = tuple(sorted(v6.items()))
        self._size = size

    def __len__(self) -> int:
        return self._size

    def __bool__(self) -> bool:
        return self._size > 0

    def lookup_parsed(self, parsed: ParsedIp | None) -> V | None:
        """The value of the longest network holding an already parsed address."""
        if parsed is None:
            return None
        version, value = parsed
        for shift, table in self._v4 if version == 4 else self._v6:
            found = table.get(value >> shift)
            if found is not None:
                return found
        return None

    def lookup(self, ip: str) -> V | None:
        """The value of the longest network holding ``ip``, None if none does (or not an IP)."""
        return self.lookup_parsed(pack_ip(ip))

    def __contains__(self, ip: object) -> bool:
        return isinstance(ip, str) and self.lookup(ip) is not None


class NetSet(NetMap[bool]):
    """A set of CIDRs with fast ``ip in netset``."""

    __slots__ = ()

    def __init__(self, cidrs: Iterable[str] = (), v6_prefix: int = 128) -> None:
        super().__init__(((cidr, True) for cidr in cidrs), v6_prefix)
