"""Structured events: one line per ban, unban, suspension or notable state change, written the
same way by the guard and the registrar.

JSON lines when the stream is not a terminal (journald, log shippers), a readable line otherwise.
Each event has a syslog priority (``priority``: 3 err, 4 warning, 5 notice, 6 info, 7 debug; the
table is ``PRIORITIES``, then the ``_failed``/``_died``/``_error`` suffixes, else info), written
in the JSON as ``"priority"``. When the stream is the systemd journal (``$JOURNAL_STREAM`` names
it), each line starts with ``<N>``, the priority prefix journald reads, so ``journalctl -p
warning`` shows the warnings and errors of both services.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

ERR, WARNING, NOTICE, INFO, DEBUG = 3, 4, 5, 6, 7

# events whose priority is not info (names ending _failed/_died: err, _error: warning)
PRIORITIES: dict[str, int] = {
    "state_corrupt": ERR,
    "worker_restarted": WARNING, "anomaly": WARNING, "fleet_down": WARNING,
    "fleet_invalid": WARNING, "fleet_set_full": WARNING, "fleet_node_conflict": WARNING,
    "registrar_shared_nonces": WARNING,
    "ban": NOTICE, "bans": NOTICE, "suspend": NOTICE, "unban": NOTICE, "suspend_end": NOTICE,
    "lockdown": NOTICE, "lockdown_end": NOTICE, "protect": NOTICE, "protect_end": NOTICE,
    "allow": NOTICE, "allow_end": NOTICE, "guard_started": NOTICE, "guard_stopped": NOTICE,
    "rules_updated": NOTICE, "reload": NOTICE, "fleet_up": NOTICE, "registrar_ready": NOTICE,
    "registrar_stopped": NOTICE,
}


def priority_of(event: str) -> int:
    """The syslog priority of an event (see the module docstring)."""
    found = PRIORITIES.get(event)
    if found is not None:
        return found
    if event.endswith(("_failed", "_died")):
        return ERR
    if event.endswith("_error"):
        return WARNING
    return INFO


def _is_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal systemd connected this service's output to."""
    wanted = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = wanted.partition(":")
    if not sep:
        return False
    try:
        found = os.fstat(stream.fileno())
        return (found.st_dev, found.st_ino) == (int(dev), int(ino))
    except (AttributeError, OSError, ValueError):
        return False


class EventLog:
    """Writes events to a stream; ``json_mode=None`` picks JSON unless the stream is a TTY."""

    def __init__(self, stream: TextIO | None = None, json_mode: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        if json_mode is None:
            isatty = getattr(self.stream, "isatty", None)
            json_mode = not (isatty and isatty())
        self.json_mode = json_mode
        self.journal = _is_journal(self.stream)

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one event at its priority (``priority_of``); returns the record."""
        return self.emit_at(priority_of(event), event, fields)

    def emit_at(self, priority: int, event: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Write one event at ``priority`` (for callers that know better, the registrar's log
        records); returns the record."""
        record = {"ts": round(time.time(), 6), "event": event, "priority": priority, **fields}
        if self.json_mode:
            line = json.dumps(record, separators=(",", ":"), default=str)
        else:
            details = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
            stamp = time.strftime("%H:%M:%S", time.localtime(record["ts"]))
            line = f"{stamp} {event} {details}".rstrip()
        if self.journal:
            line = f"<{priority}>{line}"
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed stdout must never take the guard down
        return record


_LEVELS = ((logging.CRITICAL, 2), (logging.ERROR, ERR), (logging.WARNING, WARNING),
           (logging.INFO, INFO))


class EventHandler(logging.Handler):
    """A logging handler that writes each record as an event (the registrar logs with
    ``logging``): ``event`` from the record's ``extra={"event": ...}`` (else ``log``), the
    level as the priority, ``message``, the ``fields`` extra merged in, and ``error`` with the
    exception when there is one."""

    def __init__(self, events: EventLog) -> None:
        super().__init__()
        self.events = events

    def emit(self, record: logging.LogRecord) -> None:
        try:
            priority = next((p for level, p in _LEVELS if record.levelno >= level), DEBUG)
            fields: dict[str, Any] = {"message": record.getMessage()}
            extra = getattr(record, "fields", None)
            if isinstance(extra, dict):
                fields.update(extra)
            if record.exc_info and record.exc_info[1] is not None:
                fields["error"] = repr(record.exc_info[1])
            self.events.emit_at(priority, str(getattr(record, "event", "log")), fields)
        except Exception:  # noqa: BLE001 — logging must never raise
            self.handleError(record)
