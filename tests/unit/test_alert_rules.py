"""The shipped Prometheus config and alert rules, checked and unit-tested by Prometheus' own
promtool (Debian package prometheus): the guard-down rules fire when the guard serves nothing,
the table rules when a hashlimit table, a set or conntrack nears full."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "monitoring"


def promtool(*args: str) -> str:
    tool = shutil.which("promtool")
    assert tool is not None, "promtool is missing: run `sudo make system-deps` (package prometheus)"
    result = subprocess.run([tool, *args], cwd=EXAMPLES, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_rules_and_config_are_valid() -> None:
    rules = (EXAMPLES / "alerts.yml").read_text().count("- alert: ")
    assert f"SUCCESS: {rules} rules found" in promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")


def test_guard_down_and_table_full_alerts_fire() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")
