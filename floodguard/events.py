"""Structured events: one line per ban, unban, suspension or notable state change.

JSON lines when the stream is not a terminal (journald, log shippers), a readable line otherwise.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO


class EventLog:
    """Writes events to a stream; ``json_mode=None`` picks JSON unless the stream is a TTY."""

    def __init__(self, stream: TextIO | None = None, json_mode: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        if json_mode is None:
            isatty = getattr(self.stream, "isatty", None)
            json_mode = not (isatty and isatty())
        self.json_mode = json_mode

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"ts": round(time.time(), 6), "event": event, **fields}
        if self.json_mode:
            line = json.dumps(record, separators=(",", ":"), default=str)
        else:
            details = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
            stamp = time.strftime("%H:%M:%S", time.localtime(record["ts"]))
            line = f"{stamp} {event} {details}".rstrip()
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed stdout must never take the guard down
        return record
