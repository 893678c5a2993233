"""``apply``, ``remove`` and ``status``: the rendered ruleset and the sets, installed as one unit.

apply: sets first (rules refer to them), then each table of each family. Every table is
replaced atomically by its backend; if anything fails or does not land as rendered, every table
is put back to what it held before and sets created by this run are destroyed, so a failed apply
leaves the previous state. Applying twice changes nothing (same ``iptables-save``).

remove: our jumps and chains go, then our sets; other rules are not touched. With the nft
backend a table that is left with nothing but empty ACCEPT builtin chains is deleted too, so the
namespace reads exactly as before apply (legacy tables cannot be unregistered from userspace).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from floodguard.config import Config
from floodguard.kernel import KernelError, NotRootError
from floodguard.kernel.ipset import RestoreReport, SetManager, restore_sets
from floodguard.kernel.iptables import BACKENDS, Backend, get_backend
from floodguard.kernel.rules import (
    FAMILIES,
    TABLE_ORDER,
    Ruleset,
    TableState,
    plan_table,
    render,
)

SavedEntries = Iterable[tuple[str, str, float]]


def active_families() -> tuple[int, ...]:
    """4 and 6, or just 4 when the kernel runs with IPv6 disabled (ipv6.disable=1)."""
    return FAMILIES if os.path.exists("/proc/net/if_inet6") else (4,)


def require_root() -> None:
    """Fail early, in one line, when not root."""
    if os.geteuid() != 0:
        raise NotRootError("must be run as root (the firewall and ipsets need CAP_NET_ADMIN)")


@dataclass
class ApplyReport:
    """What ``apply`` changed."""

    backend: str
    created_sets: list[str] = field(default_factory=list)
    allow_added: list[str] = field(default_factory=list)
    allow_removed: list[str] = field(default_factory=list)
    changed_tables: list[str] = field(default_factory=list)  # "IPv4 filter", ...
    restored: RestoreReport | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class RemoveReport:
    """What ``remove`` took away."""

    backends: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)
    dropped_tables: list[str] = field(default_factory=list)
    destroyed_sets: list[str] = field(default_factory=list)


def _ours(backend: Backend, family: int) -> dict[str, TableState]:
    return {name: table.ours() for name, table in backend.save(family).items()}


def _installed(backend: Backend) -> bool:
    if not backend.available():
        return False
    return any(backend.ours(family) for family in active_families())


def installed_backends() -> list[str]:
    """Backends that currently hold floodguard rules (normally zero or one)."""
    return [name for name in BACKENDS if _installed(get_backend(name))]


def _move(backend: Backend, family: int, target: dict[str, TableState]) -> list[str]:
    """Bring our part of every table of ``family`` to ``target``; returns the changed tables."""
    current = _ours(backend, family)
    empty = TableState()
    # A table already in the target state is not touched at all, so re-applying keeps counters.
    names = [t for t in TABLE_ORDER if current.get(t, empty) != target.get(t, empty)]
    plans = [plan_table(t, current.get(t, empty), target.get(t, empty)) for t in names]
    plans = [p for p in plans if not p.is_noop()]
    backend.apply_plans(family, plans)
    return [p.table for p in plans]


def _verify(backend: Backend, family: int, target: dict[str, TableState]) -> list[str]:
    """Compare what landed with the render; raise on a missing/extra rule, warn on text only."""
    after = _ours(backend, family)
    warnings = []
    for table in TABLE_ORDER:
        want, have = target.get(table, TableState()), after.get(table, TableState())
        if want == have:
            continue
        want_shape = ([(n, len(s)) for n, s in want.chains], want.jumps)
        have_shape = ([(n, len(s)) for n, s in have.chains], have.jumps)
        if want_shape != have_shape:
            raise KernelError(
                f"IPv{family} {table}: rules did not land as rendered "
                f"(expected {want_shape[0]} and jumps {list(want.jumps)}, found "
                f"{have_shape[0]} and jumps {list(have.jumps)})")
        for (name, specs), (_, got) in zip(want.chains, have.chains, strict=True):
            for spec, landed in zip(specs, got, strict=True):
                if spec != landed:
                    warnings.append(f"IPv{family} {table} {name}: rendered {spec!r}, "
                                    f"iptables-save shows {landed!r}")
    return warnings


def _apply_rules(backend: Backend, ruleset: Ruleset, report: ApplyReport) -> None:
    families = active_families()
    if families != FAMILIES:
        report.warnings.append("IPv6 is disabled in this kernel: only IPv4 rules were applied")
    before = {family: _ours(backend, family) for family in families}
    try:
        for family in families:
            target = {t: ruleset.state(family, t) for t in ruleset.tables(family)}
            changed = _move(backend, family, target)
            report.changed_tables += [f"IPv{family} {t}" for t in changed]
            report.warnings += _verify(backend, family, target)
    except KernelError as exc:
        try:
            for family in families:
                _move(backend, family, before[family])
                # A table this apply brought into being goes again once it is empty.
                new = [t for t in TABLE_ORDER if t not in before[family]]
                backend.drop_pristine_tables(family, new)
        except KernelError as again:
            raise KernelError(f"{exc}; restoring the previous rules failed too: {again}") from None
        raise KernelError(f"{exc} (previous rules restored)") from None


def _check_not_mixed(backend: Backend) -> None:
    for name in BACKENDS:
        if name == backend.name:
            continue
        other = get_backend(name)
        if _installed(other):
            raise KernelError(
                f"floodguard rules are installed with the {name} backend; run "
                f"`floodguard remove --backend {name}` first (never mix both backends)")


def _drop_stale_sets(sets: SetManager, ruleset: Ruleset) -> None:
    """Destroy floodguard sets the ruleset no longer has (e.g. floodguard-ban-v6 after the
    IPv6 ban set became per prefix): our rules no longer use them; one a foreign rule still
    uses stays. Bans are reloaded from the store, so nothing is lost."""
    wanted = set(ruleset.set_names())
    for name in sets.names():
        if name in wanted or name.endswith("-new"):
            continue
        with contextlib.suppress(KernelError):  # a foreign rule still uses it: leave it
            sets.destroy([name])


def apply(
    cfg: Config,
    backend: str = "auto",
    *,
    ruleset: Ruleset | None = None,
    saved_entries: SavedEntries | None = None,
) -> ApplyReport:
    """Install (or update) the ruleset and the sets; reload saved set entries if given."""
    require_root()
    ruleset = ruleset or render(cfg)
    chosen = get_backend(backend)
    _check_not_mixed(chosen)
    report = ApplyReport(chosen.name)
    with SetManager(ruleset.sets) as sets:
        existed = {s.name for s in ruleset.sets if sets.info(s.name) is not None}
        allow_names = {s.name for s in ruleset.sets if s.kind == "allow"}
        previous_allow = ([a for a, _ in sets.list("allow")] if allow_names <= existed
                          else None)
        try:
            report.created_sets = sets.ensure()
            report.allow_added, report.allow_removed = sets.sync_allow(ruleset.allow)
            _apply_rules(chosen, ruleset, report)
            _drop_stale_sets(sets, ruleset)
        except KernelError as exc:
            try:
                if previous_allow is not None:
                    sets.sync_allow(previous_allow)
                sets.destroy([s.name for s in ruleset.sets if s.name not in existed])
            except KernelError as again:
                raise KernelError(f"{exc}; cleaning up the sets failed too: {again}") from None
            raise
        if saved_entries is not None:
            report.restored = restore_sets(saved_entries, sets)
    return report


def remove(cfg: Config, backend: str = "auto") -> RemoveReport:
    """Remove our jumps, chains and sets from every backend that has them (or the named one)."""
    require_root()
    report = RemoveReport()
    if backend == "auto":
        chosen = [get_backend(name) for name in installed_backends()]
    else:
        chosen = [get_backend(backend)]
    for be in chosen:
        report.backends.append(be.name)
        for family in active_families():
            changed = _move(be, family, {})
            report.tables += [f"IPv{family} {t}" for t in changed]
            dropped = be.drop_pristine_tables(family, changed)
            report.dropped_tables += [f"IPv{family} {t}" for t in dropped]
            leftover = be.ours(family)
            if leftover:
                raise KernelError(f"IPv{family}: floodguard chains still present in "
                                  f"{', '.join(leftover)} after remove")
    try:
        specs = render(cfg).sets
    except Exception:  # templates gone: destroy by name prefix only
        specs = ()
    with SetManager(specs) as sets:
        report.destroyed_sets = sets.destroy()
    return report


def status(cfg: Config, backend: str = "auto") -> dict[str, Any]:
    """Our rules with packet/byte counters and the set sizes, as plain data."""
    require_root()
    if backend == "auto":
        installed = installed_backends()
        name = installed[0] if installed else get_backend("auto").name
    else:
        name = backend
    be = get_backend(name)
    rules: list[dict[str, Any]] = []
    for family in active_families():
        for table_name, table in be.save(family, counters=True).items():
            ours = table.ours()
            jump_chains = {b for b, _ in ours.jumps}
            for rule in table.rules:
                mine = rule.chain in ours.chain_names() or (
                    rule.chain in jump_chains and rule.spec in ours.jumps_in(rule.chain))
                if mine:
                    rules.append({"family": family, "table": table_name, "chain": rule.chain,
                                  "rule": rule.spec, "packets": rule.packets,
                                  "bytes": rule.bytes})
    try:
        specs = render(cfg).sets
    except Exception:
        specs = ()
    with SetManager(specs) as sets:
        infos = {i.name: i for i in sets.sizes()}
        for extra in sets.names():
            if extra not in infos and (info := sets.info(extra)) is not None:
                infos[extra] = info
    kinds = {s.name: s.kind for s in specs}
    set_rows = [{"name": i.name, "kind": kinds.get(i.name), "family": i.family,
                 "type": i.type, "entries": i.entries, "maxelem": i.maxelem,
                 "references": i.references} for i in infos.values()]
    return {"installed": bool(rules), "backend": be.name, "rules": rules, "sets": set_rows}
