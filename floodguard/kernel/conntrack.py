"""Forget a source's conntrack entries, so a ban also cuts its established TCP connections;
and how full the namespace's conntrack table is.

The raw-table ban already drops every new packet; deleting the entries stops conntrack from
keeping (and timing out) the banned source's flows and makes TCP peers see the connection die.
A full conntrack table drops every new flow (UDP SIP that survived the raw limits included).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from floodguard.events import EventLog
from floodguard.kernel import KernelError
from floodguard.kernel.iptables import run

_DELETED = re.compile(r"(\d+) flow entries have been deleted")
SYSCTL = Path("/proc/sys/net/netfilter")


def table_size(sysctl: Path = SYSCTL) -> tuple[int, int] | None:
    """(entries, capacity) of this network namespace's conntrack table (``nf_conntrack_count``
    and ``nf_conntrack_max``); None when conntrack is not loaded or not readable."""
    try:
        return (int((sysctl / "nf_conntrack_count").read_text()),
                int((sysctl / "nf_conntrack_max").read_text()))
    except (OSError, ValueError):
        return None


def forget(address: str, *, tcp_only: bool = False) -> int:
    """Delete conntrack entries from or to ``address``; returns how many were deleted.

    ``tcp_only`` is what a ban needs: UDP from a banned source is dropped in raw PREROUTING
    before conntrack, so its UDP entries simply time out, while TCP connections must be cut.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise KernelError(f"not an IP address: {address!r}") from None
    family = ["-f", "ipv6"] if ip.version == 6 else []
    deleted = 0
    for selector in ("--orig-src", "--reply-src"):
        proto = ["-p", "tcp"] if tcp_only else []
        result = run(["nice", "-n", "19", "conntrack", "-D", *family, *proto, selector, str(ip)])
        match = _DELETED.search(result.stderr)
        if match is None:  # exit 1 with "0 flow entries" just means nothing matched
            raise KernelError(f"conntrack -D failed: {result.stderr.strip() or 'no output'}")
        deleted += int(match[1])
    return deleted


_SOURCES = re.compile(r"\bsrc=(\S+)")


def tcp_peers(family: int) -> set[str]:
    """Every address that is the original or reply source of a TCP conntrack entry."""
    result = run(["conntrack", "-L", "-f", "ipv6" if family == 6 else "ipv4", "-p", "tcp"])
    if "flow entries have been shown" not in result.stderr:
        raise KernelError(f"conntrack -L failed: {result.stderr.strip() or 'no output'}")
    return {found for line in result.stdout.splitlines() for found in _SOURCES.findall(line)}


def forget_sources(keys: list[str], v6_prefix: int = 128) -> int:
    """Cut the TCP connections of banned sources: ``keys`` are ban keys (an IPv4 address, or an
    IPv6 /v6_prefix network address as ``addr.source_key`` gives it). Lists the TCP entries
    once per family and deletes only the addresses a key covers, so a batch of thousands of
    bans costs two listings and a delete per source that really has a connection."""
    wanted4 = {key for key in keys if ":" not in key}
    nets6 = {ipaddress.ip_network(f"{key}/{v6_prefix}", strict=False)
             for key in keys if ":" in key}
    deleted = 0
    if wanted4:
        for peer in sorted(tcp_peers(4) & wanted4):
            deleted += forget(peer, tcp_only=True)
    if nets6:
        for peer in sorted(tcp_peers(6)):
            try:
                address = ipaddress.IPv6Address(peer)
            except ValueError:
                continue
            if any(address in net for net in nets6):
                deleted += forget(peer, tcp_only=True)
    return deleted


def forget_connections(v6_prefix: int, events: EventLog) -> Callable[[Sequence[str]], None]:
    """The connection sweep for ``enforce.Enforcer`` in the CLI, feeds and the fleet link: cut
    banned sources' TCP connections now; a failure is an event, never an error."""

    def forget(keys: Sequence[str]) -> None:
        try:
            forget_sources(list(keys), v6_prefix)
        except (KernelError, OSError) as exc:
            events.emit("conntrack_error", ip=keys[0] if len(keys) == 1 else None,
                        count=len(keys), error=str(exc))

    return forget
