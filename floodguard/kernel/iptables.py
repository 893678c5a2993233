"""iptables backends: nft (``iptables-nft-restore --noflush``) and legacy (python-iptables).

Both take the same ``TablePlan`` list (see ``rules.plan_table``) and touch only floodguard's
chains and its jumps in the builtin chains. The nft backend feeds the plan to
``iptables-nft-restore --noflush`` / ``ip6tables-nft-restore --noflush`` (atomic per table); the
legacy backend edits the table in python-iptables' in-memory copy and commits it once (atomic per
table). State is always read back with ``iptables-{nft,legacy}-save`` so both backends are
compared on the same text.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import fcntl
import glob
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

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


class NftBackend(Backend):
    """iptables-nft-restore --noflush: each ``*table`` block is one nf_tables transaction."""

    name = NFT
    _save = {4: "iptables-nft-save", 6: "ip6tables-nft-save"}
    _restore = {4: "iptables-nft-restore", 6: "ip6tables-nft-restore"}

    def apply_plans(self, family: int, plans: Sequence[TablePlan]) -> None:
        text = restore_text(plans)
        if not text:
            return
        result = run([self._restore[family], "--noflush"], stdin=text)
        if result.returncode != 0:
            raise KernelError(f"{self._restore[family]} failed: {_first_error(result.stderr)}")

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


def xtables_libdir() -> str:
    """The xtables plugin folder python-iptables needs; without it rules silently vanish."""
    candidates: list[str] = []
    if os.environ.get("XTABLES_LIBDIR"):
        candidates += os.environ["XTABLES_LIBDIR"].split(":")
    library = ctypes.util.find_library("xtables")
    search = ["/usr/lib", "/usr/lib64", "/lib", "/usr/local/lib"]
    multiarch = sysconfig.get_config_var("MULTIARCH")
    if multiarch:
        search = [f"/usr/lib/{multiarch}", f"/lib/{multiarch}", *search]
    if library:
        for folder in search:
            for path in glob.glob(os.path.join(folder, library)):
                candidates.append(os.path.join(os.path.dirname(os.path.realpath(path)),
                                               "xtables"))
    candidates += [os.path.join(folder, "xtables") for folder in search]
    for folder in candidates:
        if os.path.isfile(os.path.join(folder, "libxt_standard.so")):
            return folder
    raise KernelError("xtables plugin folder not found (set XTABLES_LIBDIR)")


def import_iptc() -> ModuleType:
    """python-iptables, imported with XTABLES_LIBDIR set first (it reads it at import)."""
    if "iptc" not in sys.modules:
        os.environ["XTABLES_LIBDIR"] = xtables_libdir()
    try:
        import iptc
    except Exception as exc:  # iptc raises its own error types, or OSError from ctypes
        raise KernelError(f"python-iptables cannot load: {exc}") from None
    return iptc


@contextlib.contextmanager
def xtables_lock(timeout: float = 10.0) -> Iterator[None]:
    """The lock iptables-legacy takes around a table update; python-iptables takes none.

    Without it a concurrent iptables command could read the table before our commit and write
    it back after, silently dropping our change (or we theirs).
    """
    path = os.environ.get("XTABLES_LOCKFILE", "/run/xtables.lock")
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError as exc:
        raise KernelError(f"cannot open the xtables lock {path}: {exc.strerror}") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise KernelError(
                        f"another iptables command has held {path} for {timeout:g}s") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


_RULE_FLAGS = {"-p": "protocol", "-s": "src", "-d": "dst", "-i": "in_interface",
               "-o": "out_interface"}
_ONE_VALUE = {"--string", "--hex-string"}


def _is_option(token: str) -> bool:
    return token == "!" or token.startswith("--") or token in (*_RULE_FLAGS, "-m", "-j", "-g")


def build_rule(iptc: ModuleType, family: int, spec: str) -> Any:
    """A python-iptables Rule from a rule spec in iptables-save syntax."""
    rule = iptc.Rule() if family == 4 else iptc.Rule6()
    tokens = shlex.split(spec)
    module: Any = None
    invert = False
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token == "!":
            invert = True
            i += 1
            continue
        if token in _RULE_FLAGS:
            setattr(rule, _RULE_FLAGS[token], ("!" if invert else "") + tokens[i + 1])
            i += 2
        elif token == "-m":
            module = rule.create_match(tokens[i + 1])
            i += 2
        elif token in ("-j", "-g"):
            module = rule.create_target(tokens[i + 1], goto=token == "-g")
            i += 2
        elif token.startswith("--") and module is not None:
            i += 1
            values: list[str] = []
            if token in _ONE_VALUE:  # a pattern may look like an option
                values.append(tokens[i])
                i += 1
            else:
                while i < len(tokens) and not _is_option(tokens[i]):
                    values.append(tokens[i])
                    i += 1
            value: str | list[str]
            if len(values) <= 1:
                value = ("!" if invert else "") + (values[0] if values else "")
            else:
                value = (["!"] if invert else []) + values
            module.parse(token[2:], value)
        else:
            raise KernelError(f"cannot translate rule for python-iptables: {spec}")
        invert = False
    if rule.target is None:
        rule.create_target("")  # a counting rule (monitor mode): no verdict, fall through
    return rule


class LegacyBackend(Backend):
    """python-iptables: the whole table is edited in memory and committed once."""

    name = LEGACY
    _save = {4: "iptables-legacy-save", 6: "ip6tables-legacy-save"}

    def apply_plans(self, family: int, plans: Sequence[TablePlan]) -> None:
        iptc = import_iptc()
        for plan in plans:
            if not plan.is_noop():
                self._apply_plan(iptc, family, plan)

    def _apply_plan(self, iptc: ModuleType, family: int, plan: TablePlan) -> None:
        with xtables_lock():
            self._edit_table(iptc, family, plan)

    def _edit_table(self, iptc: ModuleType, family: int, plan: TablePlan) -> None:
        table_class = iptc.Table if family == 4 else iptc.Table6
        # python-iptables looks for a jump target's chain in every table it believes available
        # and instantiates each one it probes (nat, mangle, security...). Jumps stay within one
        # table, so declare only this one available.
        table_class.existing_table_names.clear()
        table_class.existing_table_names.update({t: t == plan.table for t in table_class.ALL})
        table = table_class(plan.table)
        table.autocommit = False
        try:
            table.refresh()
            for name in (*plan.declare, *plan.delete_chains):
                if table.is_chain(name):
                    iptc.Chain(table, name).flush()
                else:
                    table.create_chain(name)
            for builtin, spec in plan.delete_jumps:
                iptc.Chain(table, builtin).delete_rule(build_rule(iptc, family, spec))
            for name in plan.delete_chains:
                table.delete_chain(name)
            for chain, spec in plan.rules:
                iptc.Chain(table, chain).append_rule(build_rule(iptc, family, spec))
            for builtin, spec in reversed(plan.insert_jumps):
                iptc.Chain(table, builtin).insert_rule(build_rule(iptc, family, spec), 0)
            table.commit()
        except KernelError:
            table.refresh()
            raise
        except Exception as exc:  # python-iptables raises IPTCError, XTablesError, ValueError
            table.refresh()
            raise KernelError(f"python-iptables ({plan.table}, IPv{family}): {exc}") from None
        finally:
            table.autocommit = True


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


