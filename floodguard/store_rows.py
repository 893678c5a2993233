"""What every timed row read from the store shares: the seconds it has left and its JSON form
(its fields, then ``remaining``)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any


class TimedRow:
    """Mixin for a frozen dataclass row with an ``until`` (wall-clock seconds) field."""

    until: float

    def remaining(self, now: float) -> float:
        return max(0.0, self.until - now)

    def as_dict(self, now: float) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        out["remaining"] = round(self.remaining(now), 1)
        return out
