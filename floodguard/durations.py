"""Durations as operators write them on the command line: ``90``, ``90s``, ``30m``, ``4h``,
``1d``, ``2w`` or sums such as ``1h30m``; a plain number is seconds.

One parser (``parse``) and one click type (``Duration``) for every option that takes a time
(``--ttl``, ``--interval``, ``lab --duration``), so they all accept and refuse the same text.
"""

from __future__ import annotations

import math
import re
from typing import Any

import click

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
MAX_TEXT = 32
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)([smhdw])", re.ASCII)
_NUMBER = re.compile(r"\d+(?:\.\d+)?|\.\d+", re.ASCII)
HELP = "a duration: seconds, or 90s, 30m, 4h, 1d, 2w, 1h30m"


def parse(text: str) -> float:
    """Seconds in ``text`` (see the module docstring); ValueError naming the text otherwise.
    Case and surrounding spaces are ignored; negative, empty and non-finite values are refused."""
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        raise ValueError(f"not a duration: {str(text)[:MAX_TEXT]!r} ({HELP})")
    value = text.strip().lower()
    if _NUMBER.fullmatch(value):
        seconds = float(value)
    else:
        parts = _PART.findall(value)
        units = [unit for _, unit in parts]
        if (not parts or "".join(n + u for n, u in parts) != value
                or len(set(units)) != len(units)):
            raise ValueError(f"not a duration: {text!r} ({HELP})")
        seconds = sum(float(number) * UNITS[unit] for number, unit in parts)
    if not math.isfinite(seconds):
        raise ValueError(f"not a duration: {text!r} (too long)")
    return seconds


class Duration(click.ParamType):
    """A click option type: a duration as seconds (float, or whole seconds rounded up with
    ``whole``), at least ``minimum``; a usage error (exit 2) naming the option otherwise."""

    name = "duration"

    def __init__(self, minimum: float = 0.0, *, whole: bool = False,
                 maximum: float | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.whole = whole

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float | int:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        else:
            try:
                seconds = parse(value)
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        if seconds < self.minimum:
            self.fail(f"{value!r} is shorter than {self.minimum:g} s", param, ctx)
        if self.maximum is not None and seconds > self.maximum:
            self.fail(f"{value!r} is longer than {self.maximum:g} s", param, ctx)
        return math.ceil(seconds) if self.whole else seconds

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "DURATION"
