"""``floodguard explain IP|user[@domain]``: why a source or an account can or cannot register.

Everything floodguard knows, gathered without a running guard: the allow list and gateway
groups (config), the known-good set, known-good (source, account) pairs and whether they make
the source shared-capable, active bans and suspensions — of the address, and of one account
from it (endpoint suspensions) — and their history (the state store's bans, pair_bans and
journal), the guard's learned state (each worker's last snapshot in the
store: consecutive failures per source and per (source, account), distinct accounts failed in
the window, escalation level, how often it dropped the source), and whether the kernel's
per-source rate limits are dropping the source right now (``kernel.hashlimit``).

``explain_source`` and ``explain_account`` return plain data (``--json``); ``render`` turns it
into the operator's text. Times are wall-clock seconds; ``now`` is an argument.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import click

from floodguard import addr
from floodguard import config as configmod
from floodguard.bans import allowed_by, describe
from floodguard.cli import FloodguardCommand, config_option, json_option
from floodguard.config import Config
from floodguard.store import HOLD_ACCOUNT, HOLD_LOCKDOWN, JournalEntry, PairBanRow, Store

ENGINE_PREFIX = "engine"  # the guard workers' snapshot names ("engine-q<N>", daemon.py)
COUNTERS_PREFIX = "counters-" + ENGINE_PREFIX
HISTORY = 20  # journal entries shown

# (kernel set kind, address) -> member?; None when the kernel is not readable
SetTest = Callable[[str, str], bool | None]
# (ip, v6 prefix) -> hashlimit buckets as dicts (kernel.hashlimit.buckets_of)
BucketReader = Callable[[str, int], list[dict[str, Any]]]


def _gateways(cfg: Config, ip: str) -> list[str]:
    return [gw.name for gw in cfg.gateways if addr.Networks(gw.sources).covering(ip)]


def _engine_snapshots(store: Store) -> list[tuple[str, float, dict[str, Any]]]:
    out = []
    for name in store.snapshot_names(ENGINE_PREFIX):
        found = store.load_snapshot(name)
        if found is not None and isinstance(found[1], dict):
            out.append((name, found[0], found[1]))
    return out


def _journal(entries: Iterable[JournalEntry], now: float) -> list[dict[str, Any]]:
    return [{"op": e.op, "kind": e.kind, "reason": e.reason, "aor": e.aor,
             "failures": e.failures, "at": e.created, "until": e.until,
             "ended": e.until is not None and e.until <= now} for e in entries]


def _aor_matches(aor: str, user: str, domain: str | None) -> bool:
    got_user, _, got_domain = aor.lower().partition("@")
    return got_user == user and (domain is None or got_domain == domain)


def _endpoint(row: PairBanRow, now: float) -> dict[str, Any]:
    """An endpoint suspension (one account from one address) as explain reports it."""
    return {**row.as_dict(now), "why": (
        f"{row.aor} from {row.ip} is suspended ({row.failures} consecutive failed "
        f"registrations, level {row.level}) for {int(row.remaining(now))} s more; the "
        "address's other accounts pass")}


def _ended_endpoints(rows: Iterable[PairBanRow], now: float) -> list[dict[str, Any]]:
    """Ended endpoint suspensions as history entries (the last one of each endpoint)."""
    return [{"op": "ban", "kind": "suspend", "scope": "aor", "reason": row.reason,
             "aor": row.aor, "ip": row.ip, "failures": row.failures, "at": row.created,
             "until": row.until, "ended": True} for row in rows]


def _newest(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(entries, key=lambda e: -float(e["at"]))[:HISTORY]


def explain_source(cfg: Config, store: Store, ip: str, *, now: float,
                   set_test: SetTest | None = None,
                   buckets: BucketReader | None = None) -> dict[str, Any]:
    """What decides whether `ip` can register (ValueError when it is not an address)."""
    given = addr.canonical(ip)
    key = addr.source_key(given, cfg.limits.ipv6_prefix)
    retry = cfg.suspension.register_retry
    report: dict[str, Any] = {"target": given, "type": "source", "key": key, "at": now}
    report["allow"] = allowed_by(cfg, given)
    report["gateways"] = _gateways(cfg, given)
    known = store.known_untils([key]).get(key)
    report["known_good"] = None if known is None or known <= now else {
        "until": known, "remaining": round(known - now, 1)}
    report["known_pairs"] = [{"aor": aor, "remaining": round(left, 1)} for src, aor, left
                             in sorted(store.active_known_pairs(now=now)) if src == key]
    # a known-good pair or a gateway: failures suspend one account, never the address
    report["shared_capable"] = bool(report["known_pairs"] or report["gateways"])
    report["endpoint_suspensions"] = [_endpoint(row, now)
                                      for row in store.active_pair_bans(now=now)
                                      if row.ip == key]
    row = store.get_ban(key, now=now)
    report["ban"] = None if row is None else {**row.as_dict(now), "why": describe(row, now)}
    locked = [h for h in store.active_holds(HOLD_LOCKDOWN, now=now) if h.key == key]
    report["lockdown"] = None if not locked else {
        "failures": locked[0].count, "level": locked[0].level, "until": locked[0].until,
        "remaining": round(locked[0].remaining(now), 1),
        # in the kernel: everything but its phones' UDP (address, port) dropped there
        "in_kernel": None if set_test is None else set_test("lockdown", key)}
    report["in_kernel_ban_set"] = None if set_test is None else set_test("ban", key)
    guard: dict[str, Any] = {"failures": None, "register_retry": retry, "accounts": [],
                             "distinct_accounts_failed": 0, "suspensions_in_window": 0,
                             "last_drop": None,
                             "escalation_level": 0, "drops": 0, "snapshots": []}
    for name, saved, state in _engine_snapshots(store):
        age = now - saved
        guard["snapshots"].append({"name": name, "age": round(age, 1)})
        counters = state.get("counters", {})
        for src, count, remaining in counters.get("source", ()):
            if src == key and remaining > age:
                guard["failures"] = max(guard["failures"] or 0, int(count))
        for src, aor, count, remaining in counters.get("aor", ()):
            if src == key and remaining > age:
                guard["accounts"].append({"aor": aor, "failures": int(count),
                                          "of": retry})
        blacklist = state.get("blacklist", {})
        for src, aors in blacklist.get("spray", ()):
            if src == key:
                guard["distinct_accounts_failed"] = max(guard["distinct_accounts_failed"],
                                                        len(aors))
        guard["suspensions_in_window"] += sum(
            1 for src, _ in blacklist.get("suspensions", ()) if src == key)
        for src, level, _until in blacklist.get("escalation", ()):
            if src == key:
                guard["escalation_level"] = max(guard["escalation_level"], int(level))
    for name in store.snapshot_names(COUNTERS_PREFIX):
        found = store.load_snapshot(name)
        if found is not None and isinstance(found[1], dict):
            guard["drops"] += sum(int(n) for src, n in found[1].get("offenders", ())
                                  if src in (given, key))
            reasons = found[1].get("offender_reasons") or {}
            for src in (given, key):
                if reasons.get(src):
                    guard["last_drop"] = reasons[src]
    report["guard"] = guard
    gateways = set(report["gateways"])
    report["kernel_limits"] = None if buckets is None else [
        b for b in buckets(given, cfg.limits.ipv6_prefix)
        if not (b["shared"] and b["purpose"].startswith("gateway") and not gateways)]
    report["history"] = _newest(
        _journal(store.journal_of(ip=key, limit=HISTORY), now)
        + _ended_endpoints((r for r in store.ended_pair_bans(now=now) if r.ip == key), now))
    report["verdict"] = _source_verdict(report)
    return report


def _source_verdict(r: dict[str, Any]) -> str:
    if r["allow"]:
        return f"allow-listed ({r['allow']}): never limited nor banned"
    ban = r["ban"]
    if ban is not None:
        what = "suspended" if ban["kind"] == "suspend" else "banned"
        return f"{what} for {int(ban['remaining'])} s more: {ban['reason']}"
    lock = r["lockdown"]
    if lock is not None:
        return (f"in lockdown for {int(lock['remaining'])} s more (sprayed {lock['failures']} "
                "accounts): only its known-good pairs register; new phones behind it wait")
    if r["in_kernel_ban_set"]:
        return "in the kernel ban set with no record in the store (run floodguard apply)"
    limited = [b for b in r["kernel_limits"] or () if b["limited"]]
    if limited:
        return "the kernel's rate limits drop it right now: " + ", ".join(
            sorted({b["purpose"] for b in limited}))
    suspended = sorted(e["aor"] for e in r["endpoint_suspensions"])
    if suspended:
        return (f"can register, except {', '.join(suspended)} (endpoint suspended; "
                "the other accounts from this address pass)")
    failures = r["guard"]["failures"]
    if failures:
        return (f"can register; {failures} of {r['guard']['register_retry']} consecutive "
                "failures before a suspension")
    return "can register"


def explain_account(cfg: Config, store: Store, target: str, *, now: float) -> dict[str, Any]:
    """What floodguard knows about the account `target` (user or user@domain)."""
    user, at, domain = target.strip().lower().partition("@")
    if not user or any(c in user for c in ' \t\r\n"<>;:'):
        raise ValueError(f"not an account name: {target!r}")
    retry = cfg.suspension.register_retry
    report: dict[str, Any] = {"target": target, "type": "account", "at": now}
    sources: list[dict[str, Any]] = []
    for _name, saved, state in _engine_snapshots(store):
        age = now - saved
        for src, aor, count, remaining in state.get("counters", {}).get("aor", ()):
            if remaining > age and _aor_matches(str(aor), user, domain if at else None):
                sources.append({"source": src, "aor": aor, "failures": int(count),
                                "of": retry})
    report["failing_sources"] = sorted(sources, key=lambda s: -s["failures"])
    report["protections"] = [
        {"aor": row.key, "sources": row.count, "level": row.level, "until": row.until,
         "remaining": round(row.remaining(now), 1)}
        for row in store.active_holds(HOLD_ACCOUNT, now=now)
        if _aor_matches(row.key, user, domain if at else None)]
    report["bans"] = [{**row.as_dict(now), "why": describe(row, now)}
                      for row in store.active_bans(now=now)
                      if row.aor and _aor_matches(row.aor, user, domain if at else None)]
    mine = domain if at else None
    report["known_pairs"] = [{"source": src, "aor": aor, "remaining": round(left, 1)}
                             for src, aor, left in sorted(store.active_known_pairs(now=now))
                             if _aor_matches(aor, user, mine)]
    report["endpoint_suspensions"] = [_endpoint(row, now)
                                      for row in store.active_pair_bans(now=now)
                                      if _aor_matches(row.aor, user, mine)]
    report["history"] = _newest(
        _journal(store.journal_of(user=user, domain=mine, limit=HISTORY), now)
        + _ended_endpoints((r for r in store.ended_pair_bans(now=now)
                            if _aor_matches(r.aor, user, mine)), now))
    if report["protections"]:
        left = max(int(p["remaining"]) for p in report["protections"])
        report["verdict"] = (f"protected for {left} s more (distributed guessing): only its "
                             "known-good (source, account) pairs reach it; new phones wait")
    elif report["endpoint_suspensions"]:
        sources = sorted({e["ip"] for e in report["endpoint_suspensions"]})
        report["verdict"] = (f"suspended from {', '.join(sources)} (endpoint suspension); "
                             f"{len(report['known_pairs'])} known-good source(s)")
    elif report["bans"]:
        report["verdict"] = (f"{len(report['bans'])} source(s) stopped for this account; "
                             "other sources are not")
    elif sources:
        report["verdict"] = f"failing from {len(sources)} source(s), none stopped yet"
    else:
        report["verdict"] = "nothing stops this account"
    return report


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def render(report: dict[str, Any]) -> str:
    """The operator's text for a report of explain_source or explain_account."""
    lines = [f"{report['target']}: {report['verdict']}"]
    if report["type"] == "source":
        if report["key"] != report["target"]:
            lines.append(f"  counted as {report['key']} (limits.ipv6_prefix)")
        lines.append(f"  allow list: {report['allow'] or 'no'}")
        lines.append(f"  gateway: {', '.join(report['gateways']) or 'no'}")
        known = report["known_good"]
        lines.append("  known-good: " + (f"yes, {int(known['remaining'])} s more"
                                          if known else "no"))
        pairs = report["known_pairs"]
        lines.append(f"  known-good accounts: {len(pairs)}"
                     + (f" ({', '.join(p['aor'] for p in pairs[:5])}"
                        + (", …" if len(pairs) > 5 else "") + ")" if pairs else "")
                     + ("; shared-capable: failures suspend one account, not the address"
                        if report["shared_capable"] else ""))
        if report["ban"]:
            lines.append(f"  ban: {report['ban']['why']}")
        if report["lockdown"]:
            lock = report["lockdown"]
            where = {True: "; in the kernel (only its phones' UDP ports pass)",
                     False: "; enforced by the guard alone"}.get(lock["in_kernel"], "")
            lines.append(f"  lockdown: level {lock['level']}, {int(lock['remaining'])} s left"
                         + where)
        for item in report["endpoint_suspensions"]:
            lines.append(f"  endpoint: {item['why']}")
        if report["in_kernel_ban_set"] is not None:
            lines.append(f"  kernel ban set: {'yes' if report['in_kernel_ban_set'] else 'no'}")
        guard = report["guard"]
        if not guard["snapshots"] and not guard["drops"]:
            lines.append("  guard: no saved state (not running yet)")
        else:
            lines.append(f"  guard: {guard['failures'] or 0}/{guard['register_retry']} "
                         f"consecutive failures, {guard['distinct_accounts_failed']} accounts "
                         f"failed in the window, {guard['suspensions_in_window']} suspensions "
                         f"in the window, escalation level {guard['escalation_level']}, "
                         f"{guard['drops']} packets dropped (top-offender count)"
                         + (f", the last for {guard['last_drop']}" if guard["last_drop"] else ""))
            for item in guard["accounts"]:
                lines.append(f"    {item['aor']}: {item['failures']}/{item['of']} failures")
        if report["kernel_limits"] is None:
            lines.append("  kernel rate limits: not readable (run as root)")
        elif not report["kernel_limits"]:
            lines.append("  kernel rate limits: no bucket holds it (no recent packets)")
        else:
            for b in report["kernel_limits"]:
                state = "DROPPING" if b["limited"] else "within"
                scope = " (shared by all sources)" if b["shared"] else ""
                lines.append(f"  kernel {b['purpose']}{scope}: {state} "
                             f"(credit {b['credit']}/{b['credit_cap']}, cost {b['cost']})")
    else:
        for item in report["known_pairs"]:
            lines.append(f"  known-good from {item['source']} ({item['aor']}), "
                         f"{int(item['remaining'])} s more")
        for item in report["endpoint_suspensions"]:
            lines.append(f"  endpoint: {item['why']}")
        for item in report["failing_sources"]:
            lines.append(f"  {item['source']}: {item['failures']}/{item['of']} failures "
                         f"({item['aor']})")
        for item in report["protections"]:
            lines.append(f"  protected: {item['aor']}, {item['sources']} failing sources, "
                         f"level {item['level']}, {int(item['remaining'])} s left")
        for ban in report["bans"]:
            lines.append(f"  {ban['why']}")
    for entry in report["history"]:
        until = f" until {_when(entry['until'])}" if entry["until"] else ""
        ended = " (ended)" if entry["ended"] else ""
        aor = f" {entry['aor']}" if entry["aor"] and (
            report["type"] == "source" or entry.get("scope") == "aor") else ""
        aor += f" from {entry['ip']}" if report["type"] == "account" and entry.get("ip") \
            else ""
        lines.append(f"  {_when(entry['at'])} {entry['op']} {entry['kind'] or ''} "
                     f"{entry['reason'] or ''}{aor}{until}{ended}".rstrip())
    return "\n".join(lines)


@click.command("explain", cls=FloodguardCommand)
@config_option
@click.argument("target")
@json_option
def explain_command(config_path: str | None, target: str, as_json: bool) -> None:
    """Why can't TARGET register? TARGET is a source address or an account, user[@domain].

    Reads the config, the state store and (as root) the kernel's sets and rate-limit tables;
    the guard need not run. Exit 4 when TARGET is neither an address nor an account name.
    """
    from floodguard.errors import RefusedError
    from floodguard.store import Store

    cfg = configmod.load(config_path)
    now = time.time()
    store = Store(cfg.state.path)
    try:
        try:
            addr.canonical(target)
        except ValueError:
            try:
                report = explain_account(cfg, store, target, now=now)
            except ValueError as exc:
                raise RefusedError(f"{exc} (give an address or user[@domain])") from None
        else:
            from floodguard.allow_list import effective

            set_test, buckets = _kernel_readers(cfg)
            # the allow list in force: the config's and the run-time one (floodguard allow)
            report = explain_source(effective(cfg, store, now), store, target, now=now,
                                    set_test=set_test, buckets=buckets)
    finally:
        store.close()
    click.echo(json.dumps(report, indent=2, sort_keys=True) if as_json else render(report))


def _kernel_readers(cfg: Config) -> tuple[SetTest | None, BucketReader | None]:
    """The kernel's ban-set test and hashlimit reader, or None for each that is not readable
    here (not root, no rules applied); a warning on stderr says which."""
    from floodguard.kernel import KernelError, firewall, hashlimit

    try:
        firewall.require_root()
    except (KernelError, OSError) as exc:
        click.echo(f"floodguard: warning: kernel not read: {exc}", err=True)
        return None, None

    def buckets(ip: str, prefix: int) -> list[dict[str, Any]]:
        return [b.as_dict() for b in hashlimit.buckets_of(ip, prefix)]

    try:
        from floodguard.kernel.ipset import SetManager
        from floodguard.kernel.rules import render as render_rules

        sets = SetManager(render_rules(cfg).sets)
    except (KernelError, OSError) as exc:
        click.echo(f"floodguard: warning: kernel sets not read: {exc}", err=True)
        return None, buckets

    def set_test(kind: str, ip: str) -> bool | None:
        try:
            return sets.test(kind, ip)
        except (KernelError, OSError):
            return None

    return set_test, buckets
