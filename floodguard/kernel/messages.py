"""Kernel log lines that mean a netfilter table overflowed (hashlimit or ipset full).

A full hashlimit table makes the kernel drop new sources' packets, legitimate or not; a full
ipset refuses new bans. Both only show in the kernel log, so the metrics count them there.
"""

from __future__ import annotations

import re
import subprocess

_PATTERNS = {
    "hashlimit": re.compile(r"hashlimit.*(max count|full|cannot allocate)", re.I),
    "ipset": re.compile(r"ip_set.*(full|maxelem)", re.I),
    "conntrack": re.compile(r"nf_conntrack: table full", re.I),
}


def count(text: str) -> dict[str, int]:
    """Lines per overflow kind in kernel log text."""
    out = dict.fromkeys(_PATTERNS, 0)
    for line in text.splitlines():
        for kind, pattern in _PATTERNS.items():
            if pattern.search(line):
                out[kind] += 1
    return out


def table_full_messages() -> dict[str, int] | None:
    """Counts from the kernel ring buffer, or None when it cannot be read."""
    try:
        result = subprocess.run(["dmesg", "--kernel"], capture_output=True, text=True,
                                timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:
        return None
    return count(result.stdout)
