"""``floodguard explain IP|user[@domain]``: why can't this source or account register?

Read-only, from what the node already keeps, guard running or not:

* the config: allow-list and ``[[gateway]]`` membership (both win over everything else);
* the state database: the known-good source mark, known-good (source, AOR) pairs, the active
  ban or suspension of the address and its endpoint suspensions (one AOR from one address),
  and history — ended bans and unbans from the local journal (kept 7 days), ended endpoint
  suspensions (the last one of each endpoint, kept as long);
* each guard worker's engine snapshot (saved every 5 s): the consecutive proven-failure
  counts per (source, AOR) and per source, e.g. ``4/6``;
* each guard worker's published counters: how many of its drops were this source's (the
  top-offender list: the guard keeps no per-source reasons);
* the kernel (root, in the guard's network namespace): the per-source hashlimit tables under
  ``/proc/net/ipt_hashlimit`` (``ip6t_hashlimit`` for IPv6): a source whose credit is below
  one packet's cost is being dropped by that limit right now.

``explain(cfg, store, target)`` returns the JSON the command prints with ``--json``; the text
form is a few lines drawn from it. Account protection and lockdown (issue #16 items 3-4) are
not built yet, so they are not reported.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from floodguard import addr
from floodguard import config as configmod
from floodguard.store import PairBanRow, Store

PROC = Path("/proc/net")
_LIMITS = {"reg": "register", "sip": "sip", "syn": "tcp-syn", "bud": "budget",
           "pro": "proof", "gw": "gateway", "gat": "gateway"}


def _round(seconds: float) -> float:
    return round(max(0.0, seconds), 1)


def _aor_matches(aor: str, wanted: str) -> bool:
    """``wanted`` is "user" (any domain) or "user@domain", compared lower-cased."""
    aor, wanted = aor.lower(), wanted.lower()
    return aor == wanted if "@" in wanted else aor.split("@", 1)[0] == wanted


def _counters(store: Store, now: float) -> tuple[list[tuple[str, str, int]], dict[str, int]]:
    """Live consecutive-failure counters from every engine snapshot: ([(source, aor, count)],
    {source: run})."""
    pairs: list[tuple[str, str, int]] = []
    runs: dict[str, int] = {}
    for name in store.snapshot_names("engine"):
        snap = store.load_snapshot(name)
        if snap is None or not isinstance(snap[1], dict):
            continue
        saved, data = snap
        counters = data.get("counters") or {}
        try:
            for src, aor, count, rel in counters.get("aor", ()):
                if saved + float(rel) > now:
                    pairs.append((str(src), str(aor), int(count)))
            for src, count, rel in counters.get("source", ()):
                if saved + float(rel) > now:
                    runs[str(src)] = int(count)
        except (TypeError, ValueError):
            continue
    return pairs, runs


def _guard_drops(store: Store, ip: str) -> int:
    total = 0
    for _, data in store.counter_snapshots().values():
        for src, count in data.get("offenders", ()):
            if src == ip:
                total += int(count)
    return total


def hashlimits(ip: str, proc: Path = PROC) -> list[dict[str, Any]]:
    """The per-source hashlimit entries of ip in floodguard's tables (``fg-*``): one per
    table, with whether it is over its limit right now (credit below one packet's cost)."""
    folder = proc / ("ip6t_hashlimit" if ":" in ip else "ipt_hashlimit")
    out: list[dict[str, Any]] = []
    try:
        tables = sorted(p for p in folder.iterdir() if p.name.startswith("fg-"))
    except OSError:
        return out
    for table in tables:
        try:
            lines = table.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 5:
                continue
            source = parts[1].split("->", 1)[0].rsplit(":", 1)[0].strip("[]")
            if source != ip:
                continue
            try:
                credit, cost = int(parts[2]), int(parts[4])
            except ValueError:
                continue
            purpose = table.name.split("-")[1] if table.name.count("-") >= 2 else table.name
            out.append({"table": table.name, "limit": _LIMITS.get(purpose, purpose),
                        "dropping": credit < cost, "expires": int(parts[0])})
    return out


def _history(store: Store, now: float, *, ip: str | None = None,
             aor: str | None = None) -> list[dict[str, Any]]:
    """Ended and current address bans and unbans from the journal, and ended endpoint
    suspensions, newest first."""
    out: list[dict[str, Any]] = []
    for entry in store.journal_after(0, limit=100_000):
        if entry.op not in ("ban", "unban"):
            continue
        if ip is not None and entry.ip != ip:
            continue
        if aor is not None and not (entry.aor and _aor_matches(entry.aor, aor)):
            continue
        item: dict[str, Any] = {"op": entry.op, "ip": entry.ip, "kind": entry.kind,
                                "reason": entry.reason, "aor": entry.aor, "at": entry.created}
        if entry.until is not None:
            item["until"] = entry.until
            item["ended"] = entry.until <= now
        out.append(item)
    for row in store.ended_pair_bans(now=now):
        if (ip is None or row.ip == ip) and (aor is None or _aor_matches(row.aor, aor)):
            out.append({"op": "suspend", "ip": row.ip, "kind": "suspend", "scope": "aor",
                        "reason": row.reason, "aor": row.aor, "at": row.created,
                        "until": row.until, "ended": True, "level": row.level})
    return sorted(out, key=lambda item: -float(item["at"]))


def _pair(row: PairBanRow, now: float) -> dict[str, Any]:
    data = row.as_dict(now)
    data["why"] = (f"{row.failures} consecutive failed registrations of {row.aor} from "
                   f"{row.ip} (level {row.level})")
    return data


def explain_source(cfg: configmod.Config, store: Store, ip: str, *, now: float | None = None,
                   proc: Path = PROC) -> dict[str, Any]:
    """Everything that decides whether source ``ip`` may register."""
    now = time.time() if now is None else now
    key = addr.source_key(addr.canonical(ip), cfg.limits.ipv6_prefix)
    retry = cfg.suspension.register_retry
    allow = addr.Networks(cfg.blacklist.allow).covering(ip)
    gateway = next((gw.name for gw in cfg.gateways
                    if addr.Networks(gw.sources).covering(ip) is not None), None)
    known = {k: left for k, left in store.active_known(now=now)}.get(key)
    pairs = sorted((aor, left) for src, aor, left in store.active_known_pairs(now=now)
                   if src == key)
    counts, runs = _counters(store, now)
    ban = store.get_ban(key, now=now)
    suspensions = [r for r in store.active_pair_bans(now=now) if r.ip == key]
    data: dict[str, Any] = {
        "target": ip, "type": "source", "source": key,
        "allow_listed": allow, "gateway": gateway,
        "known_good": None if known is None else {"remaining": _round(known)},
        "shared_capable": bool(pairs) or gateway is not None,
        "known_pairs": [{"aor": aor, "remaining": _round(left)} for aor, left in pairs],
        "failures": [{"aor": aor, "count": n, "limit": retry, "text": f"{n}/{retry}"}
                     for src, aor, n in sorted(counts) if src == key],
        "failure_run": runs.get(key, 0),
        "ban": None if ban is None else ban.as_dict(now),
        "suspensions": [_pair(r, now) for r in suspensions],
        "history": _history(store, now, ip=key),
        "kernel_limits": hashlimits(key, proc),
        "guard_drops": _guard_drops(store, key),
    }
    data["summary"] = _summary_source(data)
    return data


def _summary_source(d: dict[str, Any]) -> list[str]:
    src = d["source"]
    if d["allow_listed"]:
        return [f"{src} is in the allow list ({d['allow_listed']}): never limited nor banned"]
    lines = []
    if d["ban"]:
        b = d["ban"]
        lines.append(f"{src} is {'suspended' if b['kind'] == 'suspend' else 'banned'} "
                     f"({b['reason']}) for {int(b['remaining'])} s more")
    for s in d["suspensions"]:
        lines.append(f"{s['aor']} from {src} is suspended for {int(s['remaining'])} s more: "
                     f"{s['why']}")
    dropping = sorted({k["limit"] for k in d["kernel_limits"] if k["dropping"]})
    if dropping:
        lines.append(f"the kernel's {', '.join(dropping)} limit is dropping {src} right now")
    for f in d["failures"]:
        lines.append(f"{f['aor']} from {src}: {f['text']} consecutive failures")
    if d["shared_capable"]:
        why = f"gateway {d['gateway']}" if d["gateway"] else \
            f"{len(d['known_pairs'])} known-good pair(s)"
        lines.append(f"{src} is shared-capable ({why}): failures suspend one AOR, not the "
                     "address")
    if not lines:
        lines.append(f"nothing stops {src} from registering")
    return lines


def explain_account(cfg: configmod.Config, store: Store, aor: str, *,
                    now: float | None = None) -> dict[str, Any]:
    """Everything that decides whether account ``aor`` ("user" or "user@domain") may
    register, from which sources."""
    now = time.time() if now is None else now
    retry = cfg.suspension.register_retry
    counts, _ = _counters(store, now)
    data: dict[str, Any] = {
        "target": aor, "type": "account",
        "known_pairs": [{"source": src, "aor": a, "remaining": _round(left)}
                        for src, a, left in sorted(store.active_known_pairs(now=now))
                        if _aor_matches(a, aor)],
        "failures": [{"source": src, "aor": a, "count": n, "limit": retry,
                      "text": f"{n}/{retry}"}
                     for src, a, n in sorted(counts) if _aor_matches(a, aor)],
        "suspensions": [_pair(r, now) for r in store.active_pair_bans(now=now)
                        if _aor_matches(r.aor, aor)],
        "bans": [b.as_dict(now) for b in store.active_bans(now=now)
                 if b.aor and _aor_matches(b.aor, aor)],
        "history": _history(store, now, aor=aor),
    }
    lines = [f"{s['aor']} is suspended from {s['ip']} for {int(s['remaining'])} s more"
             for s in data["suspensions"]]
    lines += [f"{b['ip']} is {'suspended' if b['kind'] == 'suspend' else 'banned'} "
              f"({b['reason']}) after failures on {b['aor']}" for b in data["bans"]]
    lines += [f"{f['aor']} from {f['source']}: {f['text']} consecutive failures"
              for f in data["failures"]]
    if not lines:
        lines.append(f"nothing stops {aor} from registering"
                     + (f" ({len(data['known_pairs'])} known-good source(s))"
                        if data["known_pairs"] else ""))
    data["summary"] = lines
    return data


def explain(cfg: configmod.Config, store: Store, target: str, *, now: float | None = None,
            proc: Path = PROC) -> dict[str, Any]:
    """``explain_source`` for an address, else ``explain_account``."""
    try:
        addr.canonical(target)
    except ValueError:
        return explain_account(cfg, store, target, now=now)
    return explain_source(cfg, store, target, now=now, proc=proc)


@click.command("explain")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="config file")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.argument("target")
def explain_command(config_path: str | None, as_json: bool, target: str) -> None:
    """Why can't TARGET (an IP address or user[@domain]) register? Allow list, gateway,
    known-good pairs, failure counts, suspensions, bans, history, kernel limits."""
    cfg = configmod.load(config_path)
    store = Store(cfg.state.path, recover=False)
    try:
        data = explain(cfg, store, target)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for line in data["summary"]:
        click.echo(line)
