"""Proven failures not yet held by an engine snapshot, kept in a file as they are counted.

The engine is snapshotted every few seconds; a crash in between must not hand a guesser a
fresh count. Each proven failure is appended as one line with one ``write(2)`` (no fsync: a
killed process loses nothing, the page cache holds it; a power cut loses the whole host's
state anyway), which costs a few microseconds where a SQLite row cost tens. At start the guard
counts again the lines newer than its snapshot; each snapshot empties the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# A line longer than this is not one of ours (a damaged file): skipped.
MAX_LINE = 1024


def log_path(state_path: str | os.PathLike[str], engine: str) -> Path | None:
    """Where an engine's failures are kept beside the state database; None for ":memory:"."""
    if str(state_path) == ":memory:":
        return None
    path = Path(state_path)
    return path.with_name(f"{path.name}.failures-{engine}")


class FailureLog:
    """Appends (time, source, AOR) lines; reads back those after a time; empties."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._fd = -1 if path is None else os.open(
            path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def record(self, ip: str, aor: str, now: float) -> None:
        if self._fd >= 0:
            os.write(self._fd, (json.dumps([round(now, 6), ip, aor[:256]]) + "\n").encode())

    def since(self, when: float) -> list[tuple[str, str, float]]:
        """(source, AOR, time) recorded after ``when``, oldest first; damaged lines skipped."""
        if self.path is None:
            return []
        try:
            data = self.path.read_bytes()
        except OSError:
            return []
        out = []
        for line in data.splitlines():
            if len(line) > MAX_LINE:
                continue
            try:
                stamp, ip, aor = json.loads(line)
                stamp = float(stamp)
            except (ValueError, TypeError):
                continue
            if stamp > when and isinstance(ip, str) and isinstance(aor, str):
                out.append((ip, aor, stamp))
        return out

    def clear(self) -> None:
        """Forget everything: a snapshot now holds it."""
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
