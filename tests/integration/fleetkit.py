"""A fleet lab: a Redis namespace and several guard nodes, each in namespaces of its own.

Topology (addresses exist only inside the namespaces)::

    node a (server ns) ──veth──┐
    node b (server ns) ──veth──┼── bridge in the redis ns, redis-server on 10.251.0.1:6379
    node c (server ns) ──veth──┘

Each node is a ``guardkit.GuardLab`` (a server namespace running ``floodguard apply`` and
``floodguard run`` with ``[fleet]``, and a client namespace for attackers).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .conftest import FLOODGUARD, Netns
from .guardkit import GuardLab
from .guardkit import build as build_guard_lab

REDIS4 = "10.251.0.1"
REDIS_PORT = 6379
REDIS_PASSWORD = "fleet-secret"  # noqa: S105 — a test-only Redis inside a namespace
REDIS_URL = f"redis://:{REDIS_PASSWORD}@{REDIS4}:{REDIS_PORT}/0"

# scripted bans on a node, the way `floodguard blacklist add` makes them (kernel set, store,
# journal), timed; prints {ip: wall-clock time the ban was in place}
SCRIPTED_BANS = """
import json, sys, time
from floodguard.bans import BanBook
from floodguard.config import load
from floodguard.kernel.ipset import SetManager
from floodguard.kernel.rules import render
from floodguard.store import Store
cfg = load(sys.argv[1])
book = BanBook(cfg, Store(cfg.state.path), SetManager(render(cfg).sets))
done = {}
for ip in sys.argv[3:]:
    book.add(ip, 600, "fleet-latency")
    done[ip] = time.time()
    time.sleep(float(sys.argv[2]))
print(json.dumps(done))
"""


def wait_for(condition: Callable[[], Any], seconds: float = 10.0, every: float = 0.02) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    return condition()


@dataclass
class Fleet:
    redis_ns: Netns
    nodes: dict[str, GuardLab]
    tmp: Path
    redis: subprocess.Popen[bytes] | None = None
    allow: dict[str, list[str]] = field(default_factory=dict)

    # ------------------------------------------------------------ redis

    def start_redis(self) -> None:
        if shutil.which("redis-server") is None:
            raise AssertionError("redis-server is missing: run `sudo make deps`")
        # no persistence: a restart comes back empty, the nodes must re-sync everything
        self.redis = subprocess.Popen(
            ["ip", "netns", "exec", self.redis_ns.name, "redis-server", "--bind", REDIS4,
             "--port", str(REDIS_PORT), "--requirepass", REDIS_PASSWORD,
             "--save", "", "--appendonly", "no",
             "--dir", str(self.tmp), "--logfile", str(self.tmp / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.redis_ns.procs.append(self.redis)  # type: ignore[arg-type]
        ok = wait_for(lambda: self.redis_cli("ping", check=False).stdout.strip() == "PONG", 10)
        assert ok, (self.tmp / "redis.log").read_text()

    def stop_redis(self) -> None:
        assert self.redis is not None
        self.redis.terminate()
        self.redis.wait(timeout=10)

    def redis_cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.redis_ns.run("redis-cli", "-h", REDIS4, "-p", str(REDIS_PORT),
                                 "--no-auth-warning", "-a", REDIS_PASSWORD, *args, check=check)

    # ------------------------------------------------------------ nodes

    def config(self, name: str, extra: str = "") -> Path:
        allow = ", ".join(f'"{a}"' for a in ["127.0.0.0/8", "::1/128", *self.allow.get(name, [])])
        return self.nodes[name].write_config(
            '[scanner]\nuser_agents = []\n'
            f'[fleet]\nredis_url = "{REDIS_URL}"\nnode = "{name}"\n'
            f'[blacklist]\nallow = [{allow}]\n' + extra)

    def start_node(self, name: str, kamailio: bool = False) -> None:
        lab = self.nodes[name]
        self.config(name)
        lab.apply()
        if kamailio:
            lab.start_kamailio()
        lab.start_guard()

    def events(self, name: str, event: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.nodes[name].events() if event is None or e["event"] == event]

    def banned(self, name: str) -> dict[str, int]:
        return self.nodes[name].ban_set()

    def floodguard(self, name: str, *args: str, check: bool = True) -> str:
        lab = self.nodes[name]
        assert lab.config_path is not None
        return lab.server.run(str(FLOODGUARD), *args, "-c", str(lab.config_path),
                              check=check).stdout

    def scripted_bans(self, name: str, ips: list[str], gap: float) -> dict[str, float]:
        lab = self.nodes[name]
        out = lab.server.run(sys.executable, "-c", SCRIPTED_BANS, str(lab.config_path),
                             str(gap), *ips).stdout
        return json.loads(out)

    def applied_at(self, name: str) -> dict[str, float]:
        """ip -> wall-clock time the node's fleet link had it in the kernel (event time)."""
        out: dict[str, float] = {}
        for event in self.events(name, "fleet_applied"):
            for ip in event["ips"]:
                out.setdefault(ip, event["ts"])
        return out

    def stop(self) -> None:
        for lab in self.nodes.values():
            if lab.guard is not None and lab.guard.poll() is None:
                lab.stop_guard()
            lab.stop_kamailio()
        if self.redis is not None and self.redis.poll() is None:
            self.stop_redis()


def build(make_netns: Any, tmp: Path, names: tuple[str, ...] = ("a", "b", "c")) -> Fleet:
    redis_ns = make_netns("redis")
    tag = redis_ns.name.split("-")[1]
    redis_ns.run("ip", "link", "add", "frbr", "type", "bridge")
    redis_ns.run("ip", "addr", "add", f"{REDIS4}/24", "dev", "frbr")
    redis_ns.run("ip", "link", "set", "frbr", "up")
    nodes: dict[str, GuardLab] = {}
    for index, name in enumerate(names):
        (tmp / name).mkdir()
        lab = build_guard_lab(make_netns, tmp / name)
        near, far = f"fr{tag}{index}n", f"fr{tag}{index}r"
        lab.server.run("ip", "link", "add", near, "type", "veth", "peer", "name", far,
                       "netns", redis_ns.name)
        lab.server.run("ip", "addr", "add", f"10.251.0.{10 + index}/24", "dev", near)
        lab.server.run("ip", "link", "set", near, "up")
        redis_ns.run("ip", "link", "set", far, "master", "frbr")
        redis_ns.run("ip", "link", "set", far, "up")
        nodes[name] = lab
    fleet = Fleet(redis_ns, nodes, tmp)
    fleet.start_redis()
    probe = (f"import socket; socket.create_connection(('{REDIS4}', {REDIS_PORT}), "
             "timeout=1).close()")
    for lab in nodes.values():
        assert wait_for(lambda lab=lab: lab.server.run(
            sys.executable, "-c", probe, check=False).returncode == 0, 10), "no path to Redis"
    return fleet
