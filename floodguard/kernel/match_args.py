"""The match options of floodguard's rule specs (string matches, hashlimits) exactly as
iptables-save prints them back, so an installed rule compares equal to its render; and
RenderError, what rendering raises for templates or a config that make no valid ruleset."""

from __future__ import annotations

import hashlib
import math

from floodguard.errors import ConfigurationError

HASHLIMIT_MAX_PERIOD = 2**32 - 1  # the kernel rejects slower rates (ERANGE)
STRING_MAX_PATTERN = 128  # XT_STRING_MAX_PATTERN_SIZE

_HASHLIMIT_SCALE = 1_000_000  # XT_HASHLIMIT_SCALE_v2: hashlimit revisions 2 and 3
_RATE_UNITS: tuple[tuple[str, int], ...] = (
    ("day", 86400), ("hour", 3600), ("min", 60), ("sec", 1),
)


class RenderError(ConfigurationError, ValueError):
    """The templates or the config cannot be turned into a valid ruleset."""


def string_match_arg(pattern: str) -> str:
    """``--string "…"`` (or ``--hex-string`` for bytes iptables-save prints as hex)."""
    raw = pattern.encode("utf-8")
    if not raw or len(raw) > STRING_MAX_PATTERN:
        raise RenderError(f"string match {pattern!r}: must be 1 to {STRING_MAX_PATTERN} bytes")
    if all(0x20 <= b < 0x7F for b in raw):
        escaped = pattern.replace("\\", "\\\\").replace('"', '\\"')
        return f'--string "{escaped}"'
    return f'--hex-string "|{raw.hex()}|"'


def hashlimit_rate(rate: float) -> tuple[str, int]:
    """A per-second rate as iptables-save prints it, and its unit in milliseconds.

    The rate is first written the way a user would (the smallest unit that makes it a whole
    number, else per day rounded), then normalised as libxt_hashlimit does (``normalise_rate``).
    """
    if not rate > 0:
        raise RenderError(f"hashlimit rate must be > 0, got {rate}")
    for _unit, seconds in reversed(_RATE_UNITS):
        count = rate * seconds
        if count >= 1 and abs(count - round(count)) < 1e-6 * count:
            return normalise_rate(round(count), seconds)
    return normalise_rate(max(1, round(rate * 86400)), 86400)


def normalise_rate(count: int, unit_seconds: int) -> tuple[str, int]:
    """``count`` per ``unit_seconds`` as iptables-save prints it back, and that unit in ms.

    libxt_hashlimit stores the period ``unit / count`` in microseconds (integer division) and
    prints it in the largest unit that still divides evenly enough, so 120/min reads back as
    2/sec and 999999/sec as 1000000/sec.
    """
    period = unit_seconds * _HASHLIMIT_SCALE // count
    if period == 0:
        raise RenderError(f"hashlimit rate {count}/{unit_seconds}s is too high "
                          "(maximum 1000000/s)")
    if period > HASHLIMIT_MAX_PERIOD:
        raise RenderError(f"hashlimit rate {count}/{unit_seconds}s is too low (minimum 1/hour)")
    mults = [(name, seconds * _HASHLIMIT_SCALE) for name, seconds in _RATE_UNITS]
    chosen = len(mults)
    for i in range(1, len(mults)):
        mult = mults[i][1]
        if period > mult or mult // period < mult % period:
            chosen = i
            break
    name, mult = mults[chosen - 1]
    return f"{mult // period}/{name}", mult // _HASHLIMIT_SCALE * 1000


def hashlimit_args(
    purpose: str,
    rate: float,
    burst: int,
    *,
    family: int,
    per_source: bool = True,
    htable_size: int = 0,
    htable_max: int = 0,
    min_expire_ms: int = 0,
    source_prefix: int | None = None,
    key: str = "",
) -> str:
    """The options of one ``-m hashlimit --hashlimit-above`` match, in iptables-save order.

    The table name carries a digest of the parameters: the kernel shares a hashlimit table by
    name and keeps the first rule's settings, so a changed rate needs a new name to take effect.
    """
    if not 1 <= burst <= 1_000_000:
        raise RenderError(f"hashlimit burst must be 1 to 1000000, got {burst}")
    rate_text, unit_ms = hashlimit_rate(rate)
    head = [f"--hashlimit-above {rate_text}", f"--hashlimit-burst {burst}"]
    if per_source:
        head.append("--hashlimit-mode srcip")
    tail: list[str] = []
    if per_source:
        if htable_size:
            tail.append(f"--hashlimit-htable-size {htable_size}")
        if htable_max:
            tail.append(f"--hashlimit-htable-max {htable_max}")
    expire = max(min_expire_ms, 2 * math.ceil(1000 * burst / rate))
    # The expiry stays explicit, and iptables-save omits one equal to the rate unit (the rule
    # would not read back as rendered): that one is nudged.
    if expire == unit_ms:
        expire += 1000
    tail.append(f"--hashlimit-htable-expire {expire}")
    if per_source:
        host_prefix = 32 if family == 4 else 128
        if source_prefix is not None and source_prefix != host_prefix:
            tail.append(f"--hashlimit-srcmask {source_prefix}")
    # key separates buckets with equal settings (e.g. two gateways with the same cps)
    material = " ".join([*head, *tail, *([key] if key else [])])
    digest = hashlib.sha1(material.encode()).hexdigest()[:8]
    return " ".join([*head, f"--hashlimit-name fg-{purpose[:3]}-{digest}", *tail])
