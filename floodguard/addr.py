"""One home for IP address text: parsing, canonical forms, networks and per-prefix source keys.

Every module that takes an address or a network from outside (configuration, CLI, feeds, the
fleet, kernel set rendering) goes through here, so they all agree on what an address is:

* IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``) *are* IPv4 addresses: the kernel sees such
  a peer as ``192.0.2.1`` and so does the guard. ``canonical`` returns the IPv4 form, and
  ``canonical_network`` turns ``::ffff:a.b.c.d/n`` with ``n >= 96`` into ``a.b.c.d/(n-96)``.
* IPv6 is written compressed and lower-case (``2001:db8::1``), IPv4 in dotted quad.
* Scoped IPv6 addresses (``fe80::1%eth0``) are refused: a zone means nothing for a remote
  source and cannot be stored in an ipset.
* ``source_key`` groups IPv6 sources by prefix (/64 by default: one subscriber's LAN), since an
  attacker owning a /64 can use 2**64 addresses.

Errors are ``ValueError`` with a message that names the bad text (cut to a readable length).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_TEXT = 64  # longer than any address or network text (45 + "/128"), shorter than junk
_MAPPED = 0xFFFF  # the ::ffff:0:0/96 prefix, shifted right by 32 bits
_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _shown(text: object) -> str:
    shown = repr(text)
    return shown if len(shown) <= MAX_TEXT + 2 else shown[:MAX_TEXT] + "…"


def _text(text: object, what: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"not an IP {what}: {_shown(text)}")
    value = text.strip()
    if not value or len(value) > MAX_TEXT:
        raise ValueError(f"not an IP {what}: {_shown(text)}")
    if "%" in value:
        raise ValueError(f"scoped IPv6 {what}s (with %zone) are not accepted: {_shown(text)}")
    return value


def _unmap(address: Address) -> Address:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse(text: str) -> Address:
    """The address in ``text`` (surrounding whitespace ignored), IPv4-mapped IPv6 as IPv4.

    Raises ValueError naming the text when it is not a single IP address.
    """
    value = _text(text, "address")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"not an IP address: {_shown(text)}") from None
    return _unmap(address)


def canonical(text: str) -> str:
    """The canonical text of an address: IPv4 dotted quad (also for ``::ffff:a.b.c.d``), IPv6
    compressed lower-case. ValueError when ``text`` is not an address."""
    if isinstance(text, str) and ":" not in text:
        # the common IPv4 case without ipaddress objects (inet_pton is ~10x faster)
        try:
            return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text))
        except (OSError, ValueError):
            pass
    return str(parse(text))


def parse_network(text: str) -> Network:
    """The network in ``text`` (a CIDR, or one address as /32 or /128); host bits are cleared.

    ``::ffff:a.b.c.d/n`` with n >= 96 is the IPv4 network ``a.b.c.d/(n-96)``. ValueError when
    ``text`` is not a network.
    """
    value = _text(text, "network")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"not an IP network in CIDR form: {_shown(text)}") from None
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and (
            int(net.network_address) >> 32 == _MAPPED):
        return ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
    return net


def canonical_network(text: str) -> str:
    """The canonical CIDR text of a network (see ``parse_network``), always with a prefix
    length: ``::ffff:10.0.0.1/128`` → ``10.0.0.1/32``."""
    return str(parse_network(text))


def source_key(ip: str, v6_prefix: int = 64) -> str:
    """The key a source is counted under: an IPv4 address itself, an IPv6 address's /v6_prefix
    network address (``2001:db8:1:2:a:b:c:d`` → ``2001:db8:1:2::``)."""
    if not 0 <= v6_prefix <= 128:
        raise ValueError(f"IPv6 prefix length must be 0 to 128, got {v6_prefix}")
    address = parse(ip)
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    shift = 128 - v6_prefix
    return str(ipaddress.IPv6Address((int(address) >> shift) << shift))


def key_network(key: str, v6_prefix: int = 64) -> Network:
    """The addresses a source key stands for: an IPv4 address as /32, an IPv6 key as its
    /v6_prefix network (``2001:db8:1:2::`` → ``2001:db8:1:2::/64``)."""
    address = parse(key)
    if isinstance(address, ipaddress.IPv4Address):
        return ipaddress.IPv4Network(address)
    return ipaddress.IPv6Network((int(address) >> (128 - v6_prefix) << (128 - v6_prefix),
                                  v6_prefix))


def key_in(key: str, network: Network, v6_prefix: int = 64) -> bool:
    """Whether the source key (see ``source_key``) and ``network`` share addresses: the key's
    prefix lies inside the network, or the network inside the key's prefix (a /128 of a banned
    /64). False for a key that is not an address."""
    try:
        return key_network(key, v6_prefix).overlaps(network)
    except ValueError:
        return False


def unbannable(address: Address) -> str | None:
    """Why an address can never be a ban target, as "is ..." completes it ("a multicast
    address"); None when it can be. No packet comes from such an address, the kernel refuses
    it, or banning it would cut the host off from itself."""
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_loopback:
        return "a loopback address"
    if address == _LIMITED_BROADCAST:
        return "the broadcast address"
    return None


class Networks:
    """A list of networks (such as ``blacklist.allow``) parsed once, with ``covering``: the same
    longest-prefix matcher the guard uses (policy.netset.NetMap), so every allow-list answer
    agrees, ``::ffff:`` forms included."""

    def __init__(self, texts: Iterable[str]) -> None:
        """ValueError (naming the entry) when one of ``texts`` is not a network."""
        # imported here: the policy package imports this module
        from floodguard.policy.netset import NetMap

        self.entries = [text for text in texts if parse_network(text) is not None]
        self._map: NetMap[str] = NetMap((text, text) for text in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def covering(self, ip: str) -> str | None:
        """The network (as it was written) holding address ``ip``, the longest prefix first;
        ValueError if ``ip`` is not an address."""
        return self._map.lookup(str(parse(ip)))
