"""The ruleset model: what ``render`` produces and ``floodguard apply`` installs.

Rules, jumps from builtin chains into ours, the ipsets (``SetSpec``), our part of one table as
the kernel holds it (``TableState``), and the whole ``Ruleset``; plus the names and limits every
backend shares (our chain prefix, the families, the builtin chains we hook, ipset's longest
timeout). No templates and no I/O: rules.py renders into these, restore_plan.py writes them out.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

from floodguard import addr

CHAIN_PREFIX = "FLOODGUARD"
FAMILIES = (4, 6)
BUILTIN_CHAINS: dict[str, tuple[str, ...]] = {
    "raw": ("PREROUTING", "OUTPUT"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
}
TABLE_ORDER = ("raw", "filter")
IPSET_MAX_TIMEOUT = 2147483  # seconds; ipset stores timeouts as 32-bit milliseconds / 2


def is_ours(chain: str) -> bool:
    """True for a chain name floodguard owns."""
    return chain == CHAIN_PREFIX or chain.startswith(CHAIN_PREFIX + "-")



@dataclass(frozen=True)
class Rule:
    """One rule: ``-A <chain> <spec>`` in ``table`` of ``family`` (4 or 6)."""

    family: int
    table: str
    chain: str
    spec: str

    @property
    def args(self) -> tuple[str, ...]:
        """The spec as an argument vector, quotes removed."""
        return tuple(shlex.split(self.spec))


@dataclass(frozen=True)
class Jump:
    """A jump from a builtin chain into one of our chains, kept at the top of the builtin."""

    family: int
    table: str
    chain: str
    target: str

    @property
    def spec(self) -> str:
        return f"-j {self.target}"


# hash:ip,port holds "address,udp:port" entries (the lockdown's pass set)
SET_TYPES = ("hash:ip", "hash:net", "hash:ip,port")
PORT_PROTOCOLS = {"udp": 17, "tcp": 6}


def port_entry(address: str, port: int, proto: str = "udp") -> str:
    """A hash:ip,port entry as ipset writes it: ``10.0.0.1,udp:5062``."""
    return f"{address},{proto}:{port}"


def split_port_entry(value: str) -> tuple[str, int, int]:
    """(address, protocol number, port) of ``address,proto:port``; ValueError otherwise."""
    address, comma, rest = value.rpartition(",")
    proto, colon, port = rest.partition(":")
    if not comma or not colon or proto not in PORT_PROTOCOLS or not port.isdigit() \
            or not 0 < int(port) < 65536:
        raise ValueError(f"not an address,proto:port entry: {value!r}")
    return str(ipaddress.ip_address(address)), PORT_PROTOCOLS[proto], int(port)


@dataclass(frozen=True)
class SetSpec:
    """An ipset floodguard owns."""

    kind: str
    name: str
    family: int
    type: str
    timeout: int | None
    maxelem: int
    hashsize: int
    # hash:net sets that hold sources: a plain address is entered as its /prefix network
    prefix: int | None = None
    # hash:ip sets the kernel itself writes (the SET target): it stores each address masked to
    # this prefix length, so an IPv6 source is kept per prefix like in the hash:net sets
    netmask: int | None = None

    @property
    def inet(self) -> str:
        return "inet" if self.family == 4 else "inet6"

    def create_command(self) -> str:
        """The set as an ``ipset restore`` create line."""
        line = (f"create {self.name} {self.type} family {self.inet} hashsize {self.hashsize} "
                f"maxelem {self.maxelem}")
        if self.netmask is not None:
            line += f" netmask {self.netmask}"
        if self.timeout is not None:
            line += f" timeout {self.timeout}"
        return line


@dataclass(frozen=True)
class TableState:
    """floodguard's part of one table: our chains with their rules, and our jumps.

    Chains and builtin chains are kept sorted by name (iptables-save lists user chains in its
    own order), so two states compare equal when the kernel holds the same rules.
    """

    chains: tuple[tuple[str, tuple[str, ...]], ...] = ()
    jumps: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "chains", tuple(sorted(self.chains)))
        object.__setattr__(self, "jumps", tuple(sorted(j for j in self.jumps if j[1])))

    def chain_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.chains)

    def jumps_in(self, builtin: str) -> tuple[str, ...]:
        return dict(self.jumps).get(builtin, ())

    def is_empty(self) -> bool:
        return not self.chains and not any(specs for _, specs in self.jumps)


@dataclass(frozen=True)
class Ruleset:
    """Everything ``floodguard apply`` installs."""

    rules: tuple[Rule, ...]
    jumps: tuple[Jump, ...]
    chains: tuple[tuple[int, str, str], ...]  # (family, table, name) in declaration order
    sets: tuple[SetSpec, ...]
    allow: tuple[str, ...]  # blacklist.allow, normalised networks
    source: str = field(default="", compare=False)

    def tables(self, family: int) -> tuple[str, ...]:
        present = {t for f, t, _ in self.chains if f == family}
        return tuple(t for t in TABLE_ORDER if t in present)

    def state(self, family: int, table: str) -> TableState:
        """The desired state of our part of ``table``."""
        chains = tuple(
            (name, tuple(r.spec for r in self.rules
                         if r.family == family and r.table == table and r.chain == name))
            for f, t, name in self.chains if f == family and t == table
        )
        builtins: dict[str, list[str]] = {}
        for jump in self.jumps:
            if jump.family == family and jump.table == table:
                builtins.setdefault(jump.chain, []).append(jump.spec)
        return TableState(chains, tuple((b, tuple(s)) for b, s in builtins.items()))

    def set_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sets)

    def allow_for(self, family: int) -> tuple[str, ...]:
        """blacklist.allow entries of one family, as hash:net can hold them."""
        return allow_entries(self.allow, family)


def allow_entries(networks: Iterable[str], family: int) -> tuple[str, ...]:
    """Networks of ``family`` for a hash:net set; /0 (which hash:net refuses) becomes two /1."""
    out: list[str] = []
    for text in networks:
        net = addr.parse_network(text)  # ::ffff:a.b.c.d/n (n >= 96) lands in the IPv4 set
        if net.version != family:
            continue
        parts = list(net.subnets(prefixlen_diff=1)) if net.prefixlen == 0 else [net]
        out.extend(str(p) for p in parts)
    return tuple(dict.fromkeys(out))

