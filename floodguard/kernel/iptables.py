"""iptables backends: nft (``iptables-nft-restore``) and legacy (``iptables-legacy-restore``).

Both take the same ``TablePlan`` list (see ``rules.plan_table``), render it to the same
``--noflush`` restore text (``rules.restore_text``) and touch only floodguard's chains and its
jumps in the builtin chains; each ``*table`` block is committed atomically by the tool (one
nf_tables transaction, or one legacy table replace). State is always read back with
``iptables-{nft,legacy}-save`` so both backends are compared on the same text.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from floodguard.kernel import KernelError
from floodguard.kernel.rules import (
    BUILTIN_CHAINS,
    TablePlan,
    TableState,
    is_ours,
    restore_text,
)

NFT = "nft"
LEGACY = "legacy"
BACKENDS = (NFT, LEGACY)
_TIMEOUT = 60


def _env() -> dict[str, str]:
    # iptables lives in /usr/sbin, which a non-login shell or a service may not have in PATH.
    env = dict(os.environ)
    parts = env.get("PATH", "").split(os.pathsep)
    parts += [folder for folder in ("/usr/sbin", "/sbin") if folder not in parts]
    env["PATH"] = os.pathsep.join(p for p in parts if p)
    return env


def run(argv: Sequence[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a firewall tool; a missing binary becomes a KernelError."""
    try:
        return subprocess.run(
            list(argv), input=stdin, capture_output=True, text=True, timeout=_TIMEOUT,
            check=False, env=_env(),
        )
    except FileNotFoundError:
        raise KernelError(f"{argv[0]} not found (is it installed? see `make deps`)") from None
    except subprocess.TimeoutExpired:
        raise KernelError(f"{argv[0]} did not finish within {_TIMEOUT}s") from None


def _first_error(stderr: str) -> str:
    """The tool's complaint on one line, without its version banner and usage hint."""
    lines = []
    for line in stderr.splitlines():
        line = re.sub(r"^\S+ v[\d.]+ \([^)]*\):\s*", "", line.strip())
        if line and not line.startswith(("# Warning", "Try `")):
            lines.append(line)
    return " ".join(lines) if lines else "failed"


def detect_backend() -> str:
    """The backend the host's ``iptables`` uses, from ``iptables -V``."""
    result = run(["iptables", "-V"])
    text = result.stdout + result.stderr
    if "nf_tables" in text:
        return NFT
    if "legacy" in text:
        return LEGACY
    raise KernelError(f"cannot tell the iptables backend from: {text.strip() or 'no output'}")


# ---------------------------------------------------------------- iptables-save parsing


@dataclass
class SavedRule:
    """One ``-A`` line of iptables-save, with counters when saved with ``-c``."""

    chain: str
    spec: str
    packets: int = 0
    bytes: int = 0


@dataclass
class SavedTable:
    """One ``*table`` block of iptables-save."""

    name: str
    policies: dict[str, str] = field(default_factory=dict)  # chain -> policy ("-" for user)
    rules: list[SavedRule] = field(default_factory=list)

    def ours(self) -> TableState:
        """floodguard's chains (with rules) and its jumps in the builtin chains."""
        chains = tuple(
            (name, tuple(r.spec for r in self.rules if r.chain == name))
            for name in self.policies if is_ours(name)
        )
        jumps: dict[str, list[str]] = {}
        builtins = BUILTIN_CHAINS.get(self.name, ())
        for rule in self.rules:
            # Only plain jumps from builtin chains are ours; a jump from someone else's chain
            # is their rule and is left alone.
            if rule.chain in builtins and _is_jump(rule.spec):
                jumps.setdefault(rule.chain, []).append(rule.spec)
        return TableState(chains, tuple((b, tuple(s)) for b, s in jumps.items()))

    def is_pristine(self) -> bool:
        """Only builtin chains, all with policy ACCEPT, and no rules: it filters nothing."""
        builtins = BUILTIN_CHAINS.get(self.name, ())
        return (not self.rules
                and all(c in builtins and p == "ACCEPT" for c, p in self.policies.items()))


_JUMP = re.compile(r"^-j (FLOODGUARD(-\S+)?)$")
_COUNTED = re.compile(r"^\[(\d+):(\d+)\] (.*)$")


def _is_jump(spec: str) -> bool:
    return bool(_JUMP.match(spec))


def parse_save(text: str) -> dict[str, SavedTable]:
    """Parse iptables-save output (with or without ``-c``)."""
    tables: dict[str, SavedTable] = {}
    current: SavedTable | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        packets = size = 0
        counted = _COUNTED.match(line)
        if counted:
            packets, size, line = int(counted[1]), int(counted[2]), counted[3]
        if line.startswith("*"):
            current = tables.setdefault(line[1:], SavedTable(line[1:]))
        elif current is None:
            continue
        elif line.startswith(":"):
            name, policy, *_ = line[1:].split()
            current.policies[name] = policy
        elif line.startswith("-A "):
            _, chain, *rest = line.split(" ", 2)
            current.rules.append(SavedRule(chain, " ".join(rest), packets, size))
        elif line == "COMMIT":
            current = None
    return tables


# ---------------------------------------------------------------- backends


class Backend:
    """What both backends provide; state is read with the matching iptables-save."""

    name = ""
    _save = {4: "", 6: ""}

    def available(self) -> bool:
        """Whether this backend's save tool exists on the host."""
        try:
            run([self._save[4], "--version"])
        except KernelError:
            return False
        return True

    def save(self, family: int, *, counters: bool = False) -> dict[str, SavedTable]:
        argv = [self._save[family]] + (["-c"] if counters else [])
        result = run(argv)
        if result.returncode != 0:
            raise KernelError(f"{argv[0]} failed: {_first_error(result.stderr)}")
        return parse_save(result.stdout)

    def ours(self, family: int) -> dict[str, TableState]:
        """Our part of every table of ``family`` that has any."""
        out = {}
        for name, table in self.save(family).items():
            state = table.ours()
            if not state.is_empty():
                out[name] = state
        return out

    def apply_plans(self, family: int, plans: Sequence[TablePlan]) -> None:
        raise NotImplementedError

    def drop_pristine_tables(self, family: int, tables: Sequence[str]) -> list[str]:
        """Delete tables left with nothing in them; only nf_tables can (legacy tables stay)."""
        return []


class RestoreBackend(Backend):
    """Feeds ``restore_text(plans)`` to the family's ``*-restore --noflush``: each ``*table``
    block is committed as one unit, and only the chains and jumps the plans name are touched."""

    _restore = {4: "", 6: ""}
    _options: tuple[str, ...] = ()

    def apply_plans(self, family: int, plans: Sequence[TablePlan]) -> None:
        text = restore_text(plans)
        if not text:
            return
        tool = self._restore[family]
        result = run([tool, "--noflush", *self._options], stdin=text)
        if result.returncode != 0:
            raise KernelError(f"{tool} failed: {_first_error(result.stderr)}")


class NftBackend(RestoreBackend):
    """iptables-nft-restore: each ``*table`` block is one nf_tables transaction."""

    name = NFT
    _save = {4: "iptables-nft-save", 6: "ip6tables-nft-save"}
    _restore = {4: "iptables-nft-restore", 6: "ip6tables-nft-restore"}

    def drop_pristine_tables(self, family: int, tables: Sequence[str]) -> list[str]:
        saved = self.save(family)
        candidates = [t for t in tables if t in saved and saved[t].is_pristine()]
        if not candidates:
            return []
        import socket

        from pyroute2.nftables.main import NFTables

        nfproto = socket.AF_INET if family == 4 else socket.AF_INET6
        dropped = []
        nft = NFTables(nfgen_family=nfproto)
        try:
            chains = [c for c in nft.get_chains() if c["nfgen_family"] == nfproto]
            rules = [r for r in nft.get_rules() if r["nfgen_family"] == nfproto]
            for table in candidates:
                own = [c for c in chains if c.get_attr("NFTA_CHAIN_TABLE") == table]
                # Double-check in nf_tables itself: a native nft chain or rule in the same table
                # is invisible to iptables-save and must keep the table alive.
                only_builtins = all(
                    c.get_attr("NFTA_CHAIN_NAME") in BUILTIN_CHAINS[table]
                    and c.get_attr("NFTA_CHAIN_POLICY") in (None, 1)
                    for c in own)
                has_rules = any(r.get_attr("NFTA_RULE_TABLE") == table for r in rules)
                if only_builtins and not has_rules:
                    nft.table("del", name=table)
                    dropped.append(table)
        finally:
            nft.close()
        return dropped


class LegacyBackend(RestoreBackend):
    """iptables-legacy-restore: each ``*table`` block is read from the kernel, edited and
    written back whole in one replace (rules it does not change keep their counters). It
    takes the xtables lock at launch, as every legacy iptables command does; ``--wait`` waits
    up to 10 s for one that holds it instead of failing at once."""

    name = LEGACY
    _save = {4: "iptables-legacy-save", 6: "ip6tables-legacy-save"}
    _restore = {4: "iptables-legacy-restore", 6: "ip6tables-legacy-restore"}
    _options = ("--wait=10",)


def get_backend(name: str) -> Backend:
    """A backend by name; ``auto`` asks the host's iptables."""
    if name == "auto":
        name = detect_backend()
    if name == NFT:
        return NftBackend()
    if name == LEGACY:
        return LegacyBackend()
    raise KernelError(f"unknown iptables backend {name!r} (auto, legacy or nft)")


def other_backends(name: str) -> list[Backend]:
    return [get_backend(b) for b in BACKENDS if b != name]


