"""Render the declarative ruleset (``floodguard/rules/``) into backend-neutral rules and sets.

``render(cfg)`` is a pure function of the config and the template files: it returns every chain,
rule, jump and ipset floodguard owns, for IPv4 and IPv6. Rule specs come out exactly as
``iptables-save`` prints them (hashlimit rates are normalised the way iptables does), so an
installed ruleset can be compared with the render text for text.

Here is what can fail with a RenderError: reading the templates, the match options of rule
specs (string matches, hashlimits: match_args.py), each chain's rules, the set specs, and the
checks across them. Beside it: the model (ruleset.py), the queue slicing (queues.py) and the
restore and dry-run text (restore_plan.py), re-exported here (``name as name``) for their
callers.
"""

from __future__ import annotations

import ipaddress
import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from floodguard import addr
from floodguard.config import Config
from floodguard.kernel.match_args import RenderError as RenderError
from floodguard.kernel.match_args import hashlimit_args, string_match_arg
from floodguard.kernel.match_args import hashlimit_rate as hashlimit_rate
from floodguard.kernel.match_args import normalise_rate as normalise_rate
from floodguard.kernel.queues import queue_args, queue_slices
from floodguard.kernel.queues import queue_for as queue_for
from floodguard.kernel.restore_plan import TablePlan as TablePlan
from floodguard.kernel.restore_plan import dry_run_text as dry_run_text
from floodguard.kernel.restore_plan import ipset_text as ipset_text
from floodguard.kernel.restore_plan import plan_table as plan_table
from floodguard.kernel.restore_plan import restore_text as restore_text
from floodguard.kernel.ruleset import (
    BUILTIN_CHAINS,
    CHAIN_PREFIX,
    FAMILIES,
    IPSET_MAX_TIMEOUT,
    SET_TYPES,
    Jump,
    Rule,
    Ruleset,
    SetSpec,
    is_ours,
)
from floodguard.kernel.ruleset import TABLE_ORDER as TABLE_ORDER
from floodguard.kernel.ruleset import TableState as TableState
from floodguard.kernel.ruleset import allow_entries as allow_entries
from floodguard.sip.proof import PREFIX as PROOF_PREFIX

RULES_ENV = "FLOODGUARD_RULES"
# The templates ship as package data; a complete set in OVERRIDE_DIR replaces them.
PACKAGE_DIR = Path(__file__).resolve().parents[1] / "rules"
OVERRIDE_DIR = Path("/etc/floodguard/rules")
# ---------------------------------------------------------------- templates


def rules_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The template folder: the argument, $FLOODGUARD_RULES, the override folder
    (/etc/floodguard/rules, when it holds a ruleset.toml), else the templates shipped in the
    package."""
    if path is not None:
        return Path(path)
    if os.environ.get(RULES_ENV):
        return Path(os.environ[RULES_ENV])
    for candidate in (OVERRIDE_DIR, PACKAGE_DIR):
        if (candidate / "ruleset.toml").is_file():
            return candidate
    raise RenderError(
        f"rules templates not found (looked in {OVERRIDE_DIR} and {PACKAGE_DIR}; "
        f"set ${RULES_ENV})"
    )


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RenderError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RenderError(f"{path}: {exc}") from None


def _expect(table: Mapping[str, Any], where: str, allowed: set[str], required: set[str]) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise RenderError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    missing = required - set(table)
    if missing:
        raise RenderError(f"{where}: missing keys {', '.join(sorted(missing))}")


def _fill(template: str, context: Mapping[str, Any], where: str) -> str:
    try:
        return template.format_map(context)
    except KeyError as exc:
        raise RenderError(f"{where}: unknown placeholder {exc}") from None
    except (ValueError, IndexError) as exc:
        raise RenderError(f"{where}: bad template {template!r}: {exc}") from None


def _tunable(tunables: Mapping[str, Any], section: str, key: str) -> Any:
    try:
        return tunables[section][key]
    except (KeyError, TypeError):
        raise RenderError(f"tunables.toml: missing [{section}] {key}") from None


def _config_or(cfg: Config, section: str, key: str, default: Any) -> Any:
    """A config value when the config has the key (it may grow one), else the tunable."""
    return getattr(getattr(cfg, section, None), key, default)


def v6_prefix(cfg: Config) -> int:
    """The IPv6 prefix length that stands for one source (limits.ipv6_prefix)."""
    return int(cfg.limits.ipv6_prefix)


def _context(cfg: Config, tunables: Mapping[str, Any], family: int) -> dict[str, Any]:
    t = lambda section, key: _tunable(tunables, section, key)  # noqa: E731
    suffix = "" if family == 4 else "-v6"
    prefix = 32 if family == 4 else v6_prefix(cfg)
    limits = cfg.limits
    per_source: dict[str, Any] = {
        "family": family,
        "htable_size": int(t("hashlimit", "htable_size")),
        "htable_max": int(t("hashlimit", "htable_max")),
        "min_expire_ms": int(t("hashlimit", "min_expire_ms")),
        "source_prefix": prefix,
    }
    syn_rate = float(_config_or(cfg, "limits", "syn_rate", t("tcp", "syn_rate")))
    syn_burst = int(_config_or(cfg, "limits", "syn_burst", t("tcp", "syn_burst")))
    if limits.queue_budget > 1_000_000:
        raise RenderError("limits.queue_budget: hashlimit allows at most 1000000 per second")
    return {
        "allow_set": f"floodguard-allow{suffix}",
        # IPv6 sources are banned and known per limits.ipv6_prefix (hash:net, sets.toml)
        "ban_set": "floodguard-ban" if family == 4 else "floodguard-ban-net6",
        "known_set": "floodguard-known" if family == 4 else "floodguard-known-net6",
        "lockdown_set": "floodguard-lockdown" if family == 4 else "floodguard-lockdown-net6",
        "pass_set": f"floodguard-pass{suffix}",
        "challenged_set": f"floodguard-challenged{suffix}",
        "challenge_401": string_match_arg("SIP/2.0 401 "),
        "challenge_407": string_match_arg("SIP/2.0 407 "),
        "challenge_match_to": int(t("challenge", "match_to")),
        "queue_in": (f"NFQUEUE {queue_args(cfg.queue.num, cfg.queue.fail_open)}"
                     if cfg.queue.workers == 1 else f"{CHAIN_PREFIX}-QIN"),
        "queue_out": (f"NFQUEUE {queue_args(cfg.queue.num, cfg.queue.fail_open)}"
                      if cfg.queue.workers == 1 else f"{CHAIN_PREFIX}-QOUT"),
        "bypass": " --queue-bypass" if cfg.queue.fail_open else "",
        # monitor mode: the limit rules only count what they would drop
        "limit_action": "" if cfg.guard.mode == "monitor" else "-j DROP",
        "guard_mark": str(t("mark", "guard")),
        "registrar_mark": str(t("mark", "registrar")),
        # only floodguard's own rule may set it: cleared first on everything else
        "registrar_mask": str(t("mark", "registrar")).partition("/")[2],
        "source_prefix": prefix,
        "tcp_connlimit": int(_config_or(cfg, "limits", "tcp_connlimit", t("tcp", "connlimit"))),
        "register_match": string_match_arg(str(t("register", "match"))),
        "register_match_to": int(t("register", "match_to")),
        "register_limit": hashlimit_args(
            "reg", limits.register_rate, limits.register_burst, **per_source),
        "sip_limit": hashlimit_args("sip", limits.sip_rate, limits.sip_burst, **per_source),
        "syn_limit": hashlimit_args("syn", syn_rate, syn_burst, **per_source),
        "budget_limit": hashlimit_args(
            "budget", float(limits.queue_budget), limits.queue_budget,
            family=family, per_source=False,
            min_expire_ms=int(t("hashlimit", "min_expire_ms"))),
        "proof_match": string_match_arg(PROOF_PREFIX.decode("ascii")),
        "proof_limit": hashlimit_args(
            "proof", float(limits.queue_budget), limits.queue_budget,
            family=family, per_source=False,
            min_expire_ms=int(t("hashlimit", "min_expire_ms"))),
    }


def _set_context(cfg: Config, tunables: Mapping[str, Any]) -> dict[str, Any]:
    t = lambda section, key: _tunable(tunables, section, key)  # noqa: E731
    known = int(t("sets", "known_expire_factor")) * cfg.registrar.expire
    return {
        "ban_time": min(cfg.blacklist.ban_time, IPSET_MAX_TIMEOUT),
        "challenge_timeout": int(t("challenge", "timeout")),
        "source_prefix": v6_prefix(cfg),
        "known_timeout": min(known, IPSET_MAX_TIMEOUT),
        "sets_maxelem": int(t("sets", "maxelem")),
        "sets_hashsize": int(t("sets", "hashsize")),
        "allow_maxelem": int(t("sets", "allow_maxelem")),
    }


def _flags(cfg: Config, family: int) -> set[str]:
    flags = {*cfg.sip.transports, cfg.sip.mode, f"ipv{family}"}
    if cfg.queue.workers > 1:
        flags.add("workers")
    return flags


_EACH = ("port", "udp_port", "user_agent", "gateway_source", "queue_slice", "registrar_if",
         "registrar_port", "tls_port")
_FLAGS = {"udp", "tcp", "local", "forward", "ipv4", "ipv6", "workers"}


def _gateway_sources(cfg: Config, family: int) -> list[dict[str, Any]]:
    """One entry per gateway network of this family, with the group's shared hashlimit."""
    out = []
    for gw in cfg.gateways:
        burst = max(1, math.ceil(gw.cps))
        limit = hashlimit_args("gwy", gw.cps, burst, family=family, per_source=False,
                               key=gw.name)
        for source in gw.sources:
            network = ipaddress.ip_network(source, strict=False)
            if network.version == family:
                out.append({"gw_source": str(network), "gw_limit": limit})
    return out


def _expand(
    rule: Mapping[str, Any], cfg: Config, where: str, family: int,
) -> list[dict[str, Any]]:
    each = rule.get("each")
    if each is None:
        return [{}]
    if each == "port":
        return [{"transport": tr, "port": port}
                for tr in cfg.sip.transports for port in cfg.sip.ports]
    if each == "udp_port":
        return [{"port": port} for port in cfg.sip.ports if "udp" in cfg.sip.transports]
    if each == "user_agent":
        return [{"user_agent": string_match_arg(ua)} for ua in cfg.scanner.user_agents]
    if each == "gateway_source":
        return _gateway_sources(cfg, family)
    if each == "tls_port":
        return [{"port": port} for port in cfg.sip.tls_ports if port not in cfg.sip.ports]
    if each == "registrar_if":
        return [{"registrar_if": name} for name in cfg.sip.registrar_interfaces]
    if each == "registrar_port":
        return [{"registrar_if": name, "transport": tr, "port": port}
                for name in cfg.sip.registrar_interfaces
                for tr in cfg.sip.transports for port in cfg.sip.ports]
    if each == "queue_slice":
        return queue_slices(cfg.queue.num, cfg.queue.workers, family, v6_prefix(cfg))
    raise RenderError(f"{where}: each must be one of {', '.join(_EACH)}, got {each!r}")


def _render_chains(
    templates: Mapping[str, Any], cfg: Config, tunables: Mapping[str, Any], path: Path,
) -> tuple[list[Rule], list[Jump], list[tuple[int, str, str]]]:
    rules: list[Rule] = []
    jumps: list[Jump] = []
    chains: list[tuple[int, str, str]] = []
    chain_tables = templates.get("chain")
    if not isinstance(chain_tables, list) or not chain_tables:
        raise RenderError(f"{path}: needs at least one [[chain]]")
    names = [c.get("name") for c in chain_tables if isinstance(c, Mapping)]
    for family in FAMILIES:
        context = _context(cfg, tunables, family)
        flags = _flags(cfg, family)
        for index, chain in enumerate(chain_tables):
            where = f"{path.name}: chain[{index}]"
            if not isinstance(chain, Mapping):
                raise RenderError(f"{where}: must be a table")
            _expect(chain, where, {"table", "name", "jump_from", "rule", "when"},
                    {"table", "name"})
            table, name = chain["table"], chain["name"]
            chain_when = chain.get("when", [])
            if not isinstance(chain_when, list) or not set(chain_when) <= _FLAGS:
                raise RenderError(f"{where}: when must be a list of {sorted(_FLAGS)}")
            if not set(chain_when) <= flags:
                continue
            if table not in BUILTIN_CHAINS:
                raise RenderError(f"{where}: table must be one of {', '.join(BUILTIN_CHAINS)}")
            if not isinstance(name, str) or not is_ours(name) or len(name) > 28:
                raise RenderError(f"{where}: name must be {CHAIN_PREFIX} or {CHAIN_PREFIX}-*")
            if names.count(name) > 1:
                raise RenderError(f"{where}: chain {name} is declared twice")
            chains.append((family, table, name))
            jump_from = chain.get("jump_from", {})
            if not isinstance(jump_from, Mapping):
                raise RenderError(f"{where}: jump_from must be a table of mode = [chains]")
            for builtin in jump_from.get(cfg.sip.mode, []):
                if builtin not in BUILTIN_CHAINS[table]:
                    raise RenderError(f"{where}: {table} has no builtin chain {builtin}")
                jumps.append(Jump(family, table, builtin, name))
            for rindex, rule in enumerate(chain.get("rule", [])):
                rwhere = f"{where}.rule[{rindex}]"
                if not isinstance(rule, Mapping):
                    raise RenderError(f"{rwhere}: must be a table")
                _expect(rule, rwhere, {"spec", "each", "when"}, {"spec"})
                when = rule.get("when", [])
                if not isinstance(when, list) or not set(when) <= _FLAGS:
                    raise RenderError(f"{rwhere}: when must be a list of {sorted(_FLAGS)}")
                if not set(when) <= flags:
                    continue
                for extra in _expand(rule, cfg, rwhere, family):
                    spec = _fill(rule["spec"], {**context, **extra}, rwhere)
                    rules.append(Rule(family, table, name, " ".join(spec.split())))
    return rules, jumps, chains


def _render_sets(
    templates: Mapping[str, Any], cfg: Config, tunables: Mapping[str, Any], path: Path,
) -> list[SetSpec]:
    context = _set_context(cfg, tunables)
    out: list[SetSpec] = []
    items = templates.get("set")
    if not isinstance(items, list) or not items:
        raise RenderError(f"{path}: needs at least one [[set]]")
    for family in FAMILIES:
        for index, item in enumerate(items):
            where = f"{path.name}: set[{index}]"
            if not isinstance(item, Mapping):
                raise RenderError(f"{where}: must be a table")
            _expect(item, where,
                    {"kind", "name", "type", "type_v6", "timeout", "maxelem", "hashsize",
                     "netmask_v6"},
                    {"kind", "name", "type", "maxelem", "hashsize"})
            stype = str(item.get("type_v6", item["type"]) if family == 6 else item["type"])
            if stype not in SET_TYPES:
                raise RenderError(f"{where}: type must be one of {', '.join(SET_TYPES)}")

            def number(key: str, where: str = where, item: Mapping[str, Any] = item) -> int:
                text = _fill(str(item[key]), context, where)
                try:
                    value = int(text)
                except ValueError:
                    raise RenderError(f"{where}: {key} must be an integer, got {text!r}") from None
                if value < 0:
                    raise RenderError(f"{where}: {key} must be >= 0")
                return value

            # an IPv6 set of sources kept per prefix has its own name, so an upgrade from the
            # per-address set needs no type change in place (apply drops the old one)
            per_prefix = family == 6 and stype != item["type"]
            name = str(item["name"]) + ("" if family == 4 else "-net6" if per_prefix else "-v6")
            if len(name) > 31:
                raise RenderError(f"{where}: set name {name} is longer than 31 characters")
            out.append(SetSpec(
                kind=str(item["kind"]), name=name, family=family, type=stype,
                timeout=number("timeout") if "timeout" in item else None,
                maxelem=number("maxelem"), hashsize=number("hashsize"),
                prefix=v6_prefix(cfg) if per_prefix else None,
                netmask=(number("netmask_v6") if family == 6 and "netmask_v6" in item
                         else None),
            ))
    kinds = [s.kind for s in out if s.family == 4]
    for required in ("ban", "known", "allow"):
        if required not in kinds:
            raise RenderError(f"{path}: no set of kind {required!r}")
    return out


def load_templates(directory: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The parsed ruleset, sets and tunables templates."""
    return (_read_toml(directory / "ruleset.toml"), _read_toml(directory / "sets.toml"),
            _read_toml(directory / "tunables.toml"))


def guard_mark(directory: str | os.PathLike[str] | None = None,
               which: str = "guard") -> tuple[int, int]:
    """(value, mask) of one of floodguard's marks (tunables.toml [mark]).

    "guard": a guard that hands a packet back with NF_REPEAT and this mark set lets the host's
    own rules after floodguard's jump judge it too (a plain NF_ACCEPT ends the hook there).
    "registrar": forward mode's mark on packets from the registrar's side.
    """
    _, _, tunables = load_templates(rules_dir(directory))
    value, _, mask = str(_tunable(tunables, "mark", which)).partition("/")
    try:
        return int(value, 0), int(mask or "0xffffffff", 0)
    except ValueError:
        raise RenderError(f"tunables.toml: [mark] {which} must be VALUE/MASK, got {value}") \
            from None


def render(cfg: Config, directory: str | os.PathLike[str] | None = None) -> Ruleset:
    """Render the ruleset for ``cfg``; raises RenderError naming the template and the problem."""
    folder = rules_dir(directory)
    ruleset_t, sets_t, tunables = load_templates(folder)
    rules, jumps, chains = _render_chains(ruleset_t, cfg, tunables, folder / "ruleset.toml")
    sets = _render_sets(sets_t, cfg, tunables, folder / "sets.toml")
    referenced = {s.name for s in sets}
    for rule in rules:
        args = rule.args
        for i, arg in enumerate(args):
            if arg == "--match-set" and args[i + 1] not in referenced:
                raise RenderError(f"rule {rule.spec!r} uses unknown set {args[i + 1]}")
            if arg in ("-j", "-g") and is_ours(args[i + 1]) and not any(
                    c == (rule.family, rule.table, args[i + 1]) for c in chains):
                raise RenderError(f"rule {rule.spec!r} jumps to undeclared chain {args[i + 1]}")
    allow = tuple(addr.canonical_network(n) for n in cfg.blacklist.allow)
    return Ruleset(tuple(rules), tuple(jumps), tuple(chains), tuple(sets), allow, str(folder))

