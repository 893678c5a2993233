"""Pure arithmetic on what a lab run measured: success rates, percentiles, per-second series.

``summarise(Measured) -> dict`` is the result record of one scenario in one mode, the object
``floodguard lab --json`` prints (see ``RESULT_KEYS``). No I/O here, so it is unit-tested.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from floodguard.lab import precision
from floodguard.lab.sampler import LAYERS

RESULT_KEYS = (
    "scenario", "protected", "legit_attempted", "legit_succeeded", "attack_sent",
    "attack_dropped_kernel", "attack_dropped_guard", "attack_reached_registrar",
    "banned_sources", "first_ban_s",
)
BAN_EVENTS = ("suspend", "ban")
# the reach counter's groups that are attackers (the office's other hosts: behind its NAT)
ATTACK_GROUPS = ("attackers", "botnet", "office-attackers")


@dataclass
class Measured:
    """Raw observations of one run (wall-clock times in seconds)."""

    scenario: str
    protected: bool
    registrar: str
    t0: float
    t_end: float
    attempts: Sequence[Sequence[Any]] = ()  # [start, latency or None, outcome, phone]
    options_answered: int = 0
    samples: Sequence[dict[str, Any]] = ()  # sampler lines, the first one before the attack
    events: Sequence[dict[str, Any]] = ()  # guard events
    guard_verdicts: dict[str, int] | None = None  # the guard's own counters ("drop:<reason>")
    registrar_cpu_s: float = 0.0
    guard_cpu_s: float = 0.0
    guard_rss: Sequence[tuple[float, float]] = ()
    attacks: dict[str, Any] = field(default_factory=dict)
    victim_before: list[str] | None = None
    victim_seen: Sequence[list[str]] = ()
    fresh: dict[str, Any] | None = None  # the fresh start's record from the phones
    office_attempts: Sequence[Sequence[Any]] = ()  # the office phones' (behind its NAT)
    owner: int | None = None  # the phone whose registrations are reported apart


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def success_pct(succeeded: int, attempted: int) -> float | None:
    """Success in percent, rounded down to 0.01 so 99.996 never shows as 100.00."""
    if not attempted:
        return None
    return math.floor(10000.0 * succeeded / attempted) / 100.0


def rates(samples: Sequence[dict[str, Any]], value: Any, t0: float
          ) -> tuple[list[float], list[float]]:
    """Per-interval rates of a cumulative counter between consecutive samples.

    ``value(sample)`` reads the counter. Returns (interval end times relative to t0, rates
    per second); intervals ending before t0 are left out.
    """
    times: list[float] = []
    out: list[float] = []
    for before, after in zip(samples, samples[1:], strict=False):
        t_a, t_b = float(before.get("t", 0)), float(after.get("t", 0))
        if t_b <= t_a or t_b < t0:
            continue
        times.append(round(t_b - t0, 3))
        out.append(max(0.0, (value(after) - value(before)) / (t_b - t_a)))
    return times, out


def _totals(sample: dict[str, Any]) -> tuple[dict[str, int], dict[str, int]]:
    kernel = {k: int(v) for k, v in (sample.get("kernel") or {}).items()}
    reach = {k: int(v) for k, v in (sample.get("reach") or {}).items()}
    return kernel, reach


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: max(0, v - before.get(k, 0)) for k, v in after.items()}


def _kernel_delta(samples: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Kernel drops per layer over the samples. A counter that went down was reset: the rules
    were replaced (the admission controller re-applies them whenever it moves the budget), so
    what the new rule counted since is added instead of the difference."""
    out: dict[str, int] = {}
    for before, after in zip(samples, samples[1:], strict=False):
        k0, k1 = _totals(before)[0], _totals(after)[0]
        for layer, value in k1.items():
            prev = k0.get(layer, 0)
            out[layer] = out.get(layer, 0) + (value - prev if value >= prev else value)
    return out


def bans(events: Iterable[dict[str, Any]], t0: float) -> tuple[list[str], float | None,
                                                               list[int]]:
    """Sources banned or suspended from t0 on, the time to the first, and the failure counts
    each ban reported (an endpoint's suspension, one AOR from an address, is not a source's:
    ``precision.holds`` reports those)."""
    ips: list[str] = []
    first: float | None = None
    failures: list[int] = []
    for event in events:
        if (event.get("event") not in BAN_EVENTS or float(event.get("ts", 0)) < t0 - 1
                or event.get("scope") == "aor"):
            continue
        ip = str(event.get("ip"))
        if ip not in ips:
            ips.append(ip)
        if event.get("failures") is not None:
            failures.append(int(event["failures"]))
        at = max(0.0, float(event.get("ts", t0)) - t0)
        first = at if first is None else min(first, at)
    return ips, first, failures


def timeline(m: Measured) -> dict[str, Any]:
    """Series for the plots: attack packets/s per layer between samples (``t`` holds the
    interval ends, seconds since the attack started) and legitimate registrations per second
    of their start (``legit_ok``/``legit_failed``, one bucket per second)."""
    seconds = max(1, math.ceil(m.t_end - m.t0))
    samples = list(m.samples)
    times, sent = rates(samples, lambda s: int(s.get("sent", 0)), m.t0)
    kernel: dict[str, list[float]] = {}
    for layer in LAYERS:
        _, values = rates(samples, lambda s, la=layer: int((s.get("kernel") or {}).get(la, 0)),
                          m.t0)
        if any(values):
            kernel[layer] = values
    _, reached = rates(samples, lambda s: sum(int((s.get("reach") or {}).get(k, 0))
                                              for k in ATTACK_GROUPS), m.t0)
    guard = []
    for i in range(len(times)):
        dropped = sum(values[i] for values in kernel.values())
        guard.append(max(0.0, sent[i] - dropped - reached[i]) if m.protected else 0.0)
    ok = [0] * seconds
    failed = [0] * seconds
    for row in m.attempts:
        k = min(seconds - 1, max(0, int(float(row[0]) - m.t0)))
        if row[2] == "ok":
            ok[k] += 1
        else:
            failed[k] += 1
    return {"seconds": seconds, "t": times, "sent": sent, "kernel": kernel, "guard": guard,
            "reached": reached, "legit_ok": ok, "legit_failed": failed}


def summarise(m: Measured) -> dict[str, Any]:
    """The result record of one run."""
    attempted = len(m.attempts)
    latencies = [float(r[1]) for r in m.attempts if r[2] == "ok" and r[1] is not None]
    succeeded = len(latencies)
    outcomes: dict[str, int] = {}
    for row in m.attempts:
        outcomes[str(row[2])] = outcomes.get(str(row[2]), 0) + 1
    sent = 0
    kernel_by_rule: dict[str, int] = {}
    reached = 0
    sets: dict[str, Any] = {}
    if m.samples:
        k0, r0 = _totals(m.samples[0])
        k1, r1 = _totals(m.samples[-1])
        sent = max(0, int(m.samples[-1].get("sent", 0)) - int(m.samples[0].get("sent", 0)))
        kernel_by_rule = {k: v for k, v in _kernel_delta(m.samples).items() if v}
        reach = _delta(r1, r0)
        reached = sum(reach.get(k, 0) for k in ATTACK_GROUPS)
        sets = dict(m.samples[-1].get("sets") or {})
    socket_in = socket_drops = 0
    if m.samples:
        u0, u1 = m.samples[0].get("udp") or {}, m.samples[-1].get("udp") or {}
        socket_in = max(0, int(u1.get("in", 0)) - int(u0.get("in", 0)))
        socket_drops = max(0, int(u1.get("rcvbuf_errors", 0)) - int(u0.get("rcvbuf_errors", 0)))
    dropped_kernel = sum(kernel_by_rule.values()) if m.protected else 0
    # What entered the guard's queue and never reached the registrar. The guard's own
    # counters say the same from the inside (they also count a phone's packet, should one be
    # dropped); both are reported.
    derived_guard = max(0, sent - dropped_kernel - reached) if m.protected else 0
    guard_drops = {k.removeprefix("drop:"): v for k, v in (m.guard_verdicts or {}).items()
                   if k.startswith("drop:") and v}
    dropped_guard = sum(guard_drops.values()) if m.guard_verdicts is not None else derived_guard
    banned, first_ban, failures = bans(m.events, m.t0)
    elapsed = max(1e-9, m.t_end - m.t0)
    rss = [v for _, v in m.guard_rss]
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    victim_changed = None
    if m.victim_before is not None:
        victim_changed = any(sorted(seen) != sorted(m.victim_before) for seen in m.victim_seen)
    return {
        "scenario": m.scenario,
        "protected": m.protected,
        "registrar": m.registrar,
        "duration_s": round(elapsed, 2),
        "legit_attempted": attempted,
        "legit_succeeded": succeeded,
        "legit_success_pct": success_pct(succeeded, attempted),
        "legit_outcomes": outcomes,
        "latency_p50_ms": None if p50 is None else round(p50 * 1000, 2),
        "latency_p99_ms": None if p99 is None else round(p99 * 1000, 2),
        "options_answered": m.options_answered,
        "attack_sent": sent,
        "attack_dropped_kernel": dropped_kernel,
        "attack_dropped_kernel_by_rule": kernel_by_rule if m.protected else {},
        "attack_dropped_guard": dropped_guard,
        "attack_reached_registrar": reached,
        "attack_dropped_guard_by_reason": guard_drops,
        "attack_unaccounted": derived_guard if m.protected else None,
        "guard_verdicts": m.guard_verdicts,
        "attack_dropped_kernel_pct": (round(100.0 * dropped_kernel / sent, 2)
                                      if sent else None),
        "banned_sources": len(banned),
        "banned": banned[:20],
        "ban_failures": failures[:20],
        "first_ban_s": None if first_ban is None else round(first_ban, 2),
        "registrar_socket_in": socket_in,
        "registrar_socket_drops": socket_drops,
        "registrar_cpu_pct": round(100.0 * m.registrar_cpu_s / elapsed, 1),
        "guard_cpu_pct": round(100.0 * m.guard_cpu_s / elapsed, 1) if m.protected else None,
        "guard_rss_mb_start": round(rss[0], 1) if rss else None,
        "guard_rss_mb_max": round(max(rss), 1) if rss else None,
        "sets": sets,
        "victim_before": m.victim_before,
        "victim_binding_changed": victim_changed,
        "fresh_start": m.fresh,
        **precision.summary(m),
        "attack": m.attacks,
        "timeline": timeline(m),
    }


# ---------------------------------------------------------------------------- acceptance

GUARD_RSS_LIMIT_MB = 256.0
GUARD_RSS_GROWTH_MB = 64.0
UNPROTECTED_BOTNET_MAX_PCT = 80.0
FRESH_START_LIMIT_S = 60.0


@dataclass(frozen=True)
class Check:
    """One acceptance criterion applied to one result."""

    scenario: str
    protected: bool
    name: str
    passed: bool
    detail: str


def _attack(result: dict[str, Any], name: str) -> dict[str, Any]:
    value = (result.get("attack") or {}).get(name)
    return value if isinstance(value, dict) else {}


def checks(results: Sequence[dict[str, Any]]) -> list[Check]:
    """The lab's acceptance criteria (the issue's "done when") applied to a list of results."""
    out: list[Check] = []
    for r in results:
        scenario, protected = r["scenario"], bool(r["protected"])

        def add(name: str, passed: bool, detail: str, sc: str = scenario,
                pr: bool = protected) -> None:
            out.append(Check(sc, pr, name, bool(passed), detail))

        pct = r.get("legit_success_pct")
        if protected:
            need = 100.0 if scenario == "storm" else 99.9
            add(f"legitimate success >= {need:g}%", pct is not None and pct >= need,
                f"{r['legit_succeeded']}/{r['legit_attempted']} ({pct}%)")
        if scenario == "botnet" and protected:
            kernel = r.get("attack_dropped_kernel_pct")
            add(">= 95% of attack packets dropped in the kernel",
                kernel is not None and kernel >= 95.0, f"{kernel}% of {r['attack_sent']}")
            start, peak = r.get("guard_rss_mb_start"), r.get("guard_rss_mb_max")
            bounded = (peak is not None and peak <= GUARD_RSS_LIMIT_MB and start is not None
                       and peak - start <= GUARD_RSS_GROWTH_MB)
            add("guard memory bounded", bounded, f"RSS {start} -> max {peak} MB")
        if scenario == "botnet" and not protected:
            add(f"unprotected registrar overwhelmed (success <= {UNPROTECTED_BOTNET_MAX_PCT:g}%)",
                pct is not None and pct <= UNPROTECTED_BOTNET_MAX_PCT,
                f"{r['legit_succeeded']}/{r['legit_attempted']} ({pct}%), "
                f"{r.get('registrar_socket_drops')} datagrams dropped at its socket")
        if scenario == "fresh-start" and protected:
            fresh = r.get("fresh_start") or {}
            limit = FRESH_START_LIMIT_S
            done = fresh.get("completed_s")
            add(f"fresh start: every new phone registered within {limit:g} s",
                done is not None and done <= limit,
                f"{fresh.get('registered')}/{fresh.get('phones')} registered, the last after "
                f"{done} s")
        if scenario == "bruteforce" and protected:
            failures = r.get("ban_failures") or []
            guesser = _attack(r, "guesser")
            blocked = guesser.get("blocked_after_failures")
            ok = (r.get("banned_sources", 0) >= 1 and bool(failures) and max(failures) <= 6
                  and not guesser.get("cracked") and (blocked is None or blocked <= 6))
            add("guesser banned after <= 6 proven failures", ok,
                f"ban after {failures} failures; guesser saw {blocked} proven failures "
                f"before silence; cracked: {bool(guesser.get('cracked'))}")
        precision.add_checks(r, add)
        if scenario == "hijack":
            changed = r.get("victim_binding_changed")
            hijack = _attack(r, "hijack")
            add("victim's binding never changed",
                changed is False and not hijack.get("hijack_200"),
                f"changed: {changed}; 200 OK to the attacker: {hijack.get('hijack_200')}")
    return out
