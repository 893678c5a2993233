"""Building blocks for the guard tests: a server namespace with rules, a registrar, the guard.

The server namespace runs Kamailio (Debian package, tests/assets/kamailio.cfg) as the registrar,
``floodguard apply`` for the kernel rules and ``floodguard run`` for the guard; the client
namespace holds several source addresses for phones and attackers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.svcrack_run import run_svcrack

from .conftest import CLIENTS4, FLOODGUARD, SERVER4, Netns

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise AssertionError(f"{tool} is missing: run `sudo make deps`")
    return path


@dataclass
class GuardLab:
    server: Netns
    client: Netns
    tmp: Path
    config_path: Path | None = None
    guard: subprocess.Popen[str] | None = None
    guard_log: Path | None = None
    kamailio: subprocess.Popen[bytes] | None = None

    def write_config(self, extra: str = "") -> Path:
        path = self.tmp / "floodguard.toml"
        text = (f'[state]\npath = "{self.tmp / "state.db"}"\n'
                '[sip]\ntransports = ["udp", "tcp"]\n' + extra)
        path.write_text(text, encoding="utf-8")
        self.config_path = path
        return path

    def apply(self) -> None:
        assert self.config_path is not None
        self.server.floodguard("apply", "-c", str(self.config_path), "--backend", "nft")

    def start_kamailio(self, port: int = 5060, extra_listen: tuple[str, ...] = ()) -> None:
        require("kamailio")
        cfg = self.tmp / "kamailio.cfg"
        text = (ASSETS / "kamailio.cfg").read_text()
        cfg.write_text(text.replace("CTL_SOCKET", str(self.tmp / "kamctl.sock")))
        log = open(self.tmp / "kamailio.log", "w")  # noqa: SIM115 — closed with the process
        self.kamailio = subprocess.Popen(
            ["ip", "netns", "exec", self.server.name, "kamailio", "-f", str(cfg), "-DD", "-E",
             "-l", f"udp:{SERVER4}:{port}", "-l", f"tcp:{SERVER4}:{port}",
             *(x for address in extra_listen for x in ("-l", address)), "-w", str(self.tmp)],
            stdout=log, stderr=subprocess.STDOUT)
        self.server.procs.append(self.kamailio)  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = self.server.run("ss", "-lun", f"sport = :{port}", check=False).stdout
            if SERVER4 in probe:
                return
            if self.kamailio.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"kamailio did not start: {(self.tmp / 'kamailio.log').read_text()}")

    def stop_kamailio(self) -> None:
        if self.kamailio is not None and self.kamailio.poll() is None:
            self.kamailio.terminate()
            try:
                self.kamailio.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.kamailio.kill()
                self.kamailio.wait()
        self.server.sh("pkill -f 'kamailio -f " + str(self.tmp) + "' || true", check=False)

    def start_registrar(self, tls: tuple[Path, Path] | None = None,
                        extra_listen: tuple[str, ...] = ()) -> None:
        """floodguard's own registrar on SERVER4:5060, accounts 1001..1010 like Kamailio's;
        with tls (certificate, key) also TLS on SERVER4:5061."""
        assert self.config_path is not None
        accounts = self.tmp / "accounts.toml"
        accounts.write_text("".join(f'[[account]]\nuser = "{u}"\npassword = "secret{u}"\n'
                                    for u in range(1001, 1011)))
        text = self.config_path.read_text()
        tls_keys = (f'tls_cert = "{tls[0]}"\ntls_key = "{tls[1]}"\n'
                    f'tls_listen = ["{SERVER4}:5061"]\n') if tls else ""
        listen = json.dumps([f"{SERVER4}:5060", *extra_listen])
        self.config_path.write_text(text + f'\n[registrar]\nlisten = {listen}\n'
                                    f'accounts = "{accounts}"\n' + tls_keys)
        log = open(self.tmp / "registrar.log", "w")  # noqa: SIM115 — closed with the process
        self.kamailio = subprocess.Popen(  # stopped like Kamailio
            ["ip", "netns", "exec", self.server.name, str(FLOODGUARD), "registrar", "-c",
             str(self.config_path)], stdout=log, stderr=subprocess.STDOUT)
        self.server.procs.append(self.kamailio)  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = self.server.run("ss", "-lun", "sport = :5060", check=False).stdout
            if SERVER4 in probe:
                return
            if self.kamailio.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"registrar did not start: {(self.tmp / 'registrar.log').read_text()}")

    def start_guard(self, *args: str) -> None:
        """``floodguard run`` with the config (and ``args``, e.g. ``--monitor``)."""
        assert self.config_path is not None
        self.guard_log = self.tmp / f"guard-{time.monotonic_ns()}.log"
        log = open(self.guard_log, "w")  # noqa: SIM115 — closed with the process
        self.guard = subprocess.Popen(
            ["ip", "netns", "exec", self.server.name, str(FLOODGUARD), "run", "-c",
             str(self.config_path), *args], stdout=log, stderr=subprocess.STDOUT, text=True)
        self.server.procs.append(self.guard)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if any(e["event"] == "guard_started" for e in self.events()):
                return
            if self.guard.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"guard did not start:\n{self.guard_log.read_text()}")

    def stop_guard(self, sig: int = 15) -> int:
        assert self.guard is not None
        self.guard.send_signal(sig)
        return self.guard.wait(timeout=20)

    def events(self) -> list[dict[str, Any]]:
        if self.guard_log is None or not self.guard_log.exists():
            return []
        out = []
        for line in self.guard_log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def ban_set(self) -> dict[str, int]:
        """floodguard-ban (v4) entries -> seconds left, read with the ipset tool."""
        text = self.server.run("ipset", "list", "floodguard-ban").stdout
        members = text.split("Members:", 1)[1].split()
        out: dict[str, int] = {}
        for i, token in enumerate(members):
            if token == "timeout":
                out[members[i - 1]] = int(members[i + 1])
        return out

    def sipp_register(self, src: str, users: list[tuple[str, str]], *, calls: int,
                      rate: float, port: int, timeout: int = 30,
                      transport: str = "u1") -> dict[str, int]:
        """Register users (user, password) from src with SIPp; returns successful/failed."""
        require("sipp")
        csv = self.tmp / f"users-{src}-{port}.csv"
        csv.write_text("SEQUENTIAL\n" + "".join(
            f"{u};[authentication username={u} password={p}]\n" for u, p in users))
        result = self.client.run(
            "sipp", f"{SERVER4}:5060", "-sf", str(ASSETS / "register.xml"), "-inf", str(csv),
            "-m", str(calls), "-r", str(rate), "-i", src, "-p", str(port), "-t", transport,
            "-timeout", f"{timeout}s", "-timeout_error", "-nostdin", "-trace_stat",
            "-stf", str(self.tmp / f"stat-{port}.csv"), "-recv_timeout", "4000",
            "-max_recv_loops", "1000", check=False)
        stats = (self.tmp / f"stat-{port}.csv").read_text().splitlines()
        header, last = stats[0].split(";"), stats[-1].split(";")
        row = dict(zip(header, last, strict=False))
        return {"successful": int(row["SuccessfulCall(C)"]), "failed": int(row["FailedCall(C)"]),
                "rc": result.returncode}


def build(make_netns: Any, tmp: Path) -> GuardLab:
    server, client = make_netns("gsrv"), make_netns("gcli")
    tag = server.name.split("-")[1]
    veth_s, veth_c = f"fg{tag}s", f"fg{tag}c"
    server.run("ip", "link", "add", veth_s, "type", "veth", "peer", "name", veth_c,
               "netns", client.name)
    server.run("ip", "addr", "add", f"{SERVER4}/24", "dev", veth_s)
    server.run("ip", "link", "set", veth_s, "up")
    for address in CLIENTS4:
        client.run("ip", "addr", "add", f"{address}/24", "dev", veth_c)
    client.run("ip", "link", "set", veth_c, "up")
    return GuardLab(server, client, tmp)


def start(lab: GuardLab, extra: str = "", registrar: str = "kamailio") -> None:
    """Rules, a registrar (Kamailio or floodguard's own) and the guard. svcrack announces itself
    as friendly-scanner: the scanner layer would drop it before any failure could be proven, so
    it is switched off here."""
    lab.write_config('[scanner]\nuser_agents = []\n' + extra)
    lab.apply()
    if registrar == "kamailio":
        lab.start_kamailio()
    else:
        lab.start_registrar()
    lab.start_guard()


def svcrack(lab: GuardLab, src: str, user: str = "1001", tries: int = 12) -> None:
    """svcrack from address src. SIPVicious 0.3.3 ignores its -b option and always sends from
    the primary address, so its local port is source-NATed to src in the client namespace."""
    require("svcrack")
    port = str(5100 + int(src.rsplit(".", 1)[1]))
    rule = ["POSTROUTING", "-p", "udp", "--sport", port, "-j", "SNAT",
            "--to-source", src]
    if lab.client.run("iptables", "-t", "nat", "-C", *rule, check=False).returncode != 0:
        lab.client.run("iptables", "-t", "nat", "-A", *rule)
    # once banned nothing answers: give up after 2 s of silence instead of svcrack's default
    run_svcrack(["ip", "netns", "exec", lab.client.name],
                ["-u", user, "-r", f"1-{tries}", "-P", port, "-x", src, "-p", "5060", "-t", "0.2",
                 "--maximumtime", "2", SERVER4])
