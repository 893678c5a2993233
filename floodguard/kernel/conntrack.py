"""Forget a source's conntrack entries, so a ban also cuts its established TCP connections.

The raw-table ban already drops every new packet; deleting the entries stops conntrack from
keeping (and timing out) the banned source's flows and makes TCP peers see the connection die.
"""

from __future__ import annotations

import ipaddress
import re

from floodguard.kernel import KernelError
from floodguard.kernel.iptables import run

_DELETED = re.compile(r"(\d+) flow entries have been deleted")


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
