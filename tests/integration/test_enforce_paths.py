"""Every ban path has the same side effects, on the real kernel (#14.1).

A source holds a TCP connection to the server namespace; then it is banned through one path —
the guard's own decision, ``floodguard blacklist add``, a blocklist feed, a fleet change — and
each time the ipset holds it, the store has the row, the journal has it (unless it came from
the fleet, which must not echo), a running guard gets the command (unless the guard decided),
its established connection is gone from conntrack, and a ``ban`` event names the path.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from floodguard.config import load
from floodguard.store import Store

from .conftest import CLIENTS4, CLIENTS6, SERVER4, SERVER6, Lab

pytestmark = pytest.mark.root("ip", "iptables", "ipset", "conntrack")

PORT = 7000
SNIPPETS = {
    # the guard's own decision, through the guard's enforcement with the daemon's flusher
    "guard": """
import sys, time
from floodguard.config import load
from floodguard.daemon import ConntrackFlusher
from floodguard.events import EventLog
from floodguard.guard import Guard
from floodguard.kernel.ipset_netlink import NetlinkSetWriter
from floodguard.kernel.rules import render
from floodguard.policy.engine import Ban
from floodguard.store import Store
cfg = load(sys.argv[1]); events = EventLog(sys.stdout, json_mode=True)
guard = Guard(cfg, sets=NetlinkSetWriter(render(cfg).sets), store=Store(cfg.state.path),
              events=events, flush_conntrack=ConntrackFlusher(events, cfg.limits.ipv6_prefix))
guard.apply([Ban(sys.argv[2], 600, "consecutive-failures", "suspend", "100@x", 6)])
time.sleep(2)  # the flusher's thread sweeps conntrack off the packet path
""",
    "feed": """
import sys
from floodguard.config import load
from floodguard.events import EventLog
from floodguard.feeds import FeedScheduler
from floodguard.kernel.conntrack import forget_connections
from floodguard.kernel.ipset import SetManager
from floodguard.kernel.rules import render
from floodguard.store import Store
cfg = load(sys.argv[1]); events = EventLog(sys.stdout, json_mode=True)
# as the daemon schedules feeds
FeedScheduler(cfg, events, lambda: Store(cfg.state.path), lambda: SetManager(render(cfg).sets),
              forget=forget_connections(cfg.limits.ipv6_prefix, events)).check()
""",
    "fleet": """
import sys, time
from floodguard.config import load
from floodguard.events import EventLog
from floodguard.fleet import Applier
from floodguard.kernel.conntrack import forget_connections
from floodguard.kernel.ipset import SetManager
from floodguard.kernel.rules import render
from floodguard.store import Store
cfg = load(sys.argv[1]); now = time.time(); events = EventLog(sys.stdout, json_mode=True)
change = {"op": "ban", "ip": sys.argv[2], "ts": now, "until": now + 600, "node": "other",
          "kind": "suspend", "reason": "consecutive-failures", "aor": None, "failures": 6}
# as the fleet link applies what the other nodes publish
Applier(cfg, Store(cfg.state.path), SetManager(render(cfg).sets), events=events,
        forget=forget_connections(cfg.limits.ipv6_prefix, events)).apply([change])
""",
}


@pytest.fixture
def backend() -> str:
    return "nft"  # the paths do not depend on the rules' backend (test_kernel_apply covers both)


def _wait(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def _connected(lab: Lab, source: str) -> bool:
    family = ["-f", "ipv6"] if ":" in source else []
    out = lab.server.run("conntrack", "-L", *family, "-p", "tcp", "-s", source,
                         check=False).stdout
    return f"src={source}" in out


def _hold_connection(lab: Lab, source: str) -> None:
    server = SERVER6 if ":" in source else SERVER4
    listener = lab.server.popen(sys.executable, "-c", (
        "import socket, time\n"
        f"s = socket.socket(socket.AF_INET{'6' if ':' in source else ''})\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('{server}', {PORT})); s.listen(8); print('up', flush=True)\n"
        "c, _ = s.accept(); time.sleep(60)"))
    assert listener.stdout is not None and listener.stdout.readline().strip() == "up"
    holder = lab.client.popen(sys.executable, "-c", (
        "import socket, time; s = socket.create_connection(('" + server + f"', {PORT}), "
        "source_address=('" + source + "', 0)); print('up', flush=True); time.sleep(60)"))
    assert holder.stdout is not None and holder.stdout.readline().strip() == "up"
    assert _wait(lambda: _connected(lab, source)), "no conntrack entry for the connection"


def _ban(lab: Lab, path: str, config: Path, source: str) -> list[dict[str, Any]]:
    """Ban ``source`` through ``path``; the events that path wrote."""
    if path == "operator":
        out = lab.server.floodguard("blacklist", "add", "-c", str(config), source,
                                    "--ttl", "600").stderr
    else:
        out = lab.server.run(sys.executable, "-c", SNIPPETS[path], str(config), source).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.mark.parametrize(("path", "family"), [("guard", 4), ("operator", 4), ("operator", 6),
                                              ("feed", 4), ("fleet", 4), ("fleet", 6)])
def test_every_ban_path_sets_stores_journals_commands_cuts_and_logs(
        lab: Lab, tmp_path: Path, path: str, family: int) -> None:
    source = CLIENTS4[0] if family == 4 else CLIENTS6[0]
    key = source if family == 4 else "fd00:fa:0:1::"  # an IPv6 source is banned per /64
    feed = tmp_path / "feed.txt"
    feed.write_text(f"{source}\n", encoding="utf-8")
    config = lab.config(f'[[feed]]\nname = "test"\nsource = "{feed}"\nban_time = 600\n')
    lab.apply(config)
    _hold_connection(lab, source)
    store = Store(load(str(config)).state.path)
    before_commands = store.last_command_id()

    events = _ban(lab, path, config, key if path in ("guard", "fleet") else source)

    assert key in lab.server.ipset_list(), f"{path}: not in the kernel ban set"
    row = store.get_ban(key)
    assert row is not None, f"{path}: no ban row in the store"
    journalled = [e for e in store.journal_after(0) if e.op == "ban" and e.ip == key]
    assert bool(journalled) == (path != "fleet"), f"{path}: journal {journalled}"
    commands = [c for c in store.take_commands(before_commands) if c.ip == key]
    assert [c.op for c in commands] == ([] if path == "guard" else ["ban"]), commands
    assert _wait(lambda: not _connected(lab, source)), f"{path}: the TCP connection survived"
    banned = [e for e in events if e["event"] in ("ban", "suspend") and e["ip"] == key]
    assert banned and banned[0]["by"] == path, events
    store.close()
