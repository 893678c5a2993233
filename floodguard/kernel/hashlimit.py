"""The kernel's per-source rate limits as they stand: floodguard's hashlimit tables.

Every ``-m hashlimit`` rule floodguard renders names its table ``fg-<purpose>-<digest>``
(``match_args.hashlimit_args``); the kernel lists each table's buckets in
``/proc/net/ipt_hashlimit/<name>`` (IPv4) and ``/proc/net/ip6t_hashlimit/<name>`` (IPv6), one
line per tracked source::

    <seconds to expiry> <src>:<sport>-><dst>:<dport> <credit> <credit_cap> <cost>

(``xt_hashlimit.c``, ``dl_seq_real_show``). The kernel brings a bucket's credit up to date
before it prints it, so a bucket with less credit than one packet costs drops the source's next
packet (the rule's ``--hashlimit-above`` matches): the limit holds the source right now.

A table holds at most ``--hashlimit-htable-max`` buckets; when it is full the kernel drops the
packets of every *new* source, legitimate or not, and says so only in its log (rate-limited).
``tables`` counts each table's buckets against that capacity, read from the table's rule, so the
metrics can warn before it fills. Counting a full table means reading a million lines (about a
second of CPU, the table's lock taken for each chunk): ``TableReader`` reads again only when that
costs no more than a small share of the time since its last reading.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

PROC = Path("/proc/net")
TABLE_DIRS = (("ipt_hashlimit", 4), ("ip6t_hashlimit", 6))
PREFIX = "fg-"
# the three letters after "fg-": what the rule limits (match_args.hashlimit_args names them)
PURPOSES = {
    "reg": "REGISTER per source",
    "sip": "all SIP per source",
    "syn": "TCP connections per source",
    "pro": "answers carrying the guard's token, in all (admission)",
    "bud": "unknown sources in all (admission budget)",
    "gwy": "gateway group, in all",
}
_MAX_LINES = 1_000_000  # a table holds at most htable-max entries; never read without bound
_CHUNK = 1 << 20
_NAME = re.compile(r"--hashlimit-name (\S+)")
_CAPACITY = re.compile(r"--hashlimit-htable-max (\d+)")


def purpose_of(table: str) -> str:
    """What a floodguard hashlimit table limits, from its name."""
    return PURPOSES.get(table[len(PREFIX):len(PREFIX) + 3], "rate limit")


@dataclass(frozen=True)
class Bucket:
    """One source's bucket in one hashlimit table."""

    table: str
    family: int
    source: str  # as the kernel keys it (masked to the table's srcmask)
    expires: int  # seconds until the kernel forgets the bucket
    credit: int
    credit_cap: int
    cost: int

    @property
    def purpose(self) -> str:
        return purpose_of(self.table)

    @property
    def shared(self) -> bool:
        """One bucket for every source (the table has no per-source key)."""
        return self.source in ("0.0.0.0", "::")

    @property
    def limited(self) -> bool:
        """Over the limit now: the source's next packet is dropped."""
        return self.credit < self.cost

    def as_dict(self) -> dict[str, object]:
        return {"table": self.table, "purpose": self.purpose, "source": self.source,
                "expires": self.expires, "credit": self.credit, "credit_cap": self.credit_cap,
                "cost": self.cost, "limited": self.limited, "shared": self.shared}


def parse_line(table: str, family: int, line: str) -> Bucket | None:
    """One line of a hashlimit table, or None when it is not a bucket line."""
    fields = line.split()
    if len(fields) != 5:
        return None
    try:
        expires = int(fields[0])
        credit, cap, cost = int(fields[2]), int(fields[3]), int(fields[4])
        source_text = fields[1].split("->", 1)[0].rpartition(":")[0]
        source = str(ipaddress.ip_address(source_text))
    except ValueError:
        return None
    return Bucket(table, family, source, expires, credit, cap, cost)


def buckets_of(ip: str, v6_prefix: int = 64, proc: Path = PROC) -> list[Bucket]:
    """Every floodguard hashlimit bucket that holds `ip` (``::ffff:`` IPv4 read as IPv4);
    empty when no table is readable (no rules applied, not root).

    IPv6 tables key a source by its `v6_prefix` network (``--hashlimit-srcmask``), listed as
    the network's address, so an IPv6 address matches its own or its network's bucket. Tables
    without a per-source key (the admission budget, gateway groups) have one bucket, listed
    with the unspecified address; they are included, as they limit `ip` too.
    """
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    keys = {str(address), "0.0.0.0" if address.version == 4 else "::"}  # "::": shared tables
    if address.version == 6:
        keys.add(str(ipaddress.ip_network(f"{address}/{v6_prefix}", strict=False)
                     .network_address))
    found: list[Bucket] = []
    for family, path in _table_files(proc):
        if family != address.version:
            continue
        try:
            with path.open() as handle:
                for n, line in enumerate(handle):
                    if n >= _MAX_LINES:
                        break
                    bucket = parse_line(path.name, family, line)
                    if bucket is not None and bucket.source in keys:
                        found.append(bucket)
        except OSError:
            continue
    return found


def _table_files(proc: Path) -> Iterator[tuple[int, Path]]:
    """(family, path) of every floodguard table the kernel lists; none when unreadable."""
    for folder, family in TABLE_DIRS:
        try:
            paths = sorted(p for p in (proc / folder).iterdir() if p.name.startswith(PREFIX))
        except OSError:
            continue
        for path in paths:
            yield family, path


@dataclass(frozen=True)
class Table:
    """One floodguard hashlimit table: the buckets it holds and the most it may hold."""

    name: str
    family: int
    entries: int
    # --hashlimit-htable-max of the table's rule; None when the rule sets none (the shared
    # tables: the admission budget and gateway groups hold one bucket)
    capacity: int | None

    @property
    def purpose(self) -> str:
        return purpose_of(self.name)

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "family": self.family, "purpose": self.purpose,
                "entries": self.entries, "capacity": self.capacity}


def capacities(rules: Iterable[tuple[int, str]]) -> dict[tuple[int, str], int]:
    """(family, table name) -> ``--hashlimit-htable-max``, from (family, rule spec) pairs as
    iptables-save prints them (one rule may hold several hashlimit matches)."""
    out: dict[tuple[int, str], int] = {}
    for family, spec in rules:
        for rest in f" {spec}".split(" -m hashlimit ")[1:]:
            match = rest.split(" -m ", 1)[0]
            name, capacity = _NAME.search(match), _CAPACITY.search(match)
            if name is not None and capacity is not None:
                out[(family, name.group(1))] = int(capacity.group(1))
    return out


def tables(rules: Iterable[tuple[int, str]], proc: Path = PROC) -> list[Table]:
    """Every floodguard hashlimit table the kernel holds, its buckets counted, with the
    capacity its rule in `rules` ((family, spec) pairs) gives it; empty when none is readable
    (no rules applied, not root). The count is the kernel's listing, one line per bucket."""
    limits = capacities(rules)
    out = []
    for family, path in _table_files(proc):
        entries = _count_lines(path)
        if entries is not None:
            out.append(Table(path.name, family, entries, limits.get((family, path.name))))
    return out


class TableReader:
    """``tables`` at a bounded cost: a new count only once the last one's CPU time is at most
    `share` of the time since it was taken (a few milliseconds normally, so every call; during
    a flood that fills the tables, every minute or so). In between, the last count is returned
    with the capacities of the current rules."""

    def __init__(self, share: float = 0.05, proc: Path = PROC,
                 clock: Callable[[], float] = time.monotonic,
                 cpu: Callable[[], float] = time.thread_time) -> None:
        self.share, self.proc, self.clock, self.cpu = share, proc, clock, cpu
        self._last: list[Table] | None = None
        self._at = 0.0
        self._cost = 0.0

    def __call__(self, rules: Iterable[tuple[int, str]]) -> list[Table]:
        now = self.clock()
        if self._last is None or now - self._at >= self._cost / self.share:
            start = self.cpu()
            self._last = tables(rules, self.proc)
            self._at, self._cost = now, self.cpu() - start
            return self._last
        limits = capacities(rules)
        return [replace(t, capacity=limits.get((t.family, t.name))) for t in self._last]


def _count_lines(path: Path) -> int | None:
    """Lines in a /proc listing (read in large chunks: a full table lists a million), or None
    when it vanished or cannot be read."""
    n = 0
    try:
        with path.open("rb", buffering=0) as handle:
            while chunk := handle.read(_CHUNK):
                n += chunk.count(b"\n")
    except OSError:
        return None
    return n
