"""The failure log: appended as counted, read back after a time, damaged lines skipped."""

from __future__ import annotations

from pathlib import Path

from floodguard.failures import FailureLog, log_path


def test_lines_come_back_after_a_time_and_clear_empties(tmp_path: Path) -> None:
    path = log_path(tmp_path / "state.db", "engine-q0")
    assert path == tmp_path / "state.db.failures-engine-q0"
    log = FailureLog(path)
    log.record("198.51.100.7", "1001@x", 10.0)
    log.record("198.51.100.7", "1001@x", 20.0)
    with open(path, "ab") as damaged:  # a line cut by a crash, and junk
        damaged.write(b'[30.0, "198.51.100.8"\n\x00\x01junk\n' + b"x" * 5000 + b"\n")
    assert FailureLog(path).since(15.0) == [("198.51.100.7", "1001@x", 20.0)]
    log.clear()
    assert log.since(0.0) == []
    log.record("198.51.100.9", "1002@x", 40.0)  # appends after a clear start at the top
    assert log.since(0.0) == [("198.51.100.9", "1002@x", 40.0)]
    log.close()


def test_an_in_memory_store_keeps_none() -> None:
    assert log_path(":memory:", "engine") is None
    log = FailureLog(None)
    log.record("198.51.100.7", "1001@x", 1.0)
    assert log.since(0.0) == []
