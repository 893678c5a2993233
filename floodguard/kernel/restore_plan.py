"""Writing a ruleset out: the iptables-restore commands that move one table of ours from its
current state to the rendered one (``plan_table``, ``restore_text``), the sets in ipset restore
syntax (``ipset_text``), and what ``floodguard apply --dry-run`` prints (``dry_run_text``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from floodguard.kernel.ruleset import FAMILIES, Ruleset, TableState


@dataclass(frozen=True)
class TablePlan:
    """The iptables-restore commands that move one table from its current state to a target."""

    table: str
    declare: tuple[str, ...] = ()  # our chains to create or flush (":NAME - [0:0]")
    rules: tuple[tuple[str, str], ...] = ()  # (chain, spec) appended after declaration
    delete_jumps: tuple[tuple[str, str], ...] = ()  # (builtin, spec), one per occurrence
    insert_jumps: tuple[tuple[str, str], ...] = ()  # (builtin, spec), final top-down order
    delete_chains: tuple[str, ...] = ()  # declared (flushed) first, deleted after the jumps

    def is_noop(self) -> bool:
        return not (self.declare or self.rules or self.delete_jumps or self.insert_jumps
                    or self.delete_chains)


def plan_table(table: str, current: TableState, target: TableState) -> TablePlan:
    """Commands that turn ``current`` (our part of a table) into ``target``.

    Our chains are always re-declared and refilled, which is atomic and idempotent. Jumps are
    left alone when they already read as the target (no duplicate, no move); otherwise ours in
    that builtin chain are deleted and re-inserted at the top in the target order.
    """
    target_names = target.chain_names()
    stale = tuple(n for n in current.chain_names() if n not in target_names)
    delete: list[tuple[str, str]] = []
    insert: list[tuple[str, str]] = []
    builtins = dict.fromkeys([b for b, _ in current.jumps] + [b for b, _ in target.jumps])
    for builtin in builtins:
        have, want = current.jumps_in(builtin), target.jumps_in(builtin)
        if have == want:
            continue
        delete += [(builtin, spec) for spec in have]
        insert += [(builtin, spec) for spec in want]
    rules = tuple((name, spec) for name, specs in target.chains for spec in specs)
    return TablePlan(table, target_names, rules, tuple(delete), tuple(insert), stale)


def restore_text(plans: Sequence[TablePlan], *, comment_jumps: bool = False) -> str:
    """iptables-restore ``--noflush`` input for the plans (one ``*table … COMMIT`` each)."""
    lines: list[str] = []
    for plan in plans:
        if plan.is_noop():
            continue
        lines.append(f"*{plan.table}")
        lines += [f":{name} - [0:0]" for name in (*plan.declare, *plan.delete_chains)]
        lines += [f"-D {builtin} {spec}" for builtin, spec in plan.delete_jumps]
        lines += [f"-X {name}" for name in plan.delete_chains]
        lines += [f"-A {chain} {spec}" for chain, spec in plan.rules]
        if comment_jumps and plan.insert_jumps:
            lines.append("# jumps below are inserted only where they are not already present")
        # Inserting at position 1 in reverse leaves the jumps at the top in the planned order.
        lines += [f"-I {builtin} 1 {spec}" for builtin, spec in reversed(plan.insert_jumps)]
        lines.append("COMMIT")
    return "\n".join(lines) + ("\n" if lines else "")


def _host_form(network: str) -> str:
    net = ipaddress.ip_network(network)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def ipset_text(ruleset: Ruleset) -> str:
    """The sets and the allow-list entries in ``ipset restore`` syntax."""
    lines: list[str] = []
    for spec in ruleset.sets:
        lines.append(spec.create_command())
        if spec.kind == "allow":
            lines += [f"add {spec.name} {_host_form(n)}" for n in ruleset.allow_for(spec.family)]
    return "\n".join(lines) + "\n"


def dry_run_text(ruleset: Ruleset, config_source: str | None = None) -> str:
    """What ``floodguard apply --dry-run`` prints: the sets, then the rules for both families."""
    out = [
        f"# floodguard apply --dry-run: {config_source or 'built-in defaults'}; nothing is changed",
        "# ipsets (ipset restore syntax; created through pyroute2 when missing, existing entries",
        "# are kept, floodguard-allow is synced to blacklist.allow)",
        ipset_text(ruleset).rstrip("\n"),
    ]
    for family in FAMILIES:
        tool = "iptables-restore" if family == 4 else "ip6tables-restore"
        out.append(f"# IPv{family}: {tool} --noflush")
        plans = [plan_table(t, TableState(), ruleset.state(family, t))
                 for t in ruleset.tables(family)]
        out.append(restore_text(plans, comment_jumps=True).rstrip("\n"))
    return "\n".join(out) + "\n"
