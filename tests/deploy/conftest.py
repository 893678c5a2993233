"""Fixtures for the deployment tests: a booted Debian container deployed with Ansible over SSH.

The container is a debootstrapped Debian 12 (bookworm) or 13 (trixie) root (cached between runs
in ``CACHE_ROOT``, keyed by a hash of its suite, package list and build recipe: images.py) booted by
``systemd-nspawn --boot`` on a fresh overlay, inside a network namespace this session creates.
It has real systemd and its own network stack; the host reaches it over SSH through a veth pair
(``10.254.N.0/30``), and a client namespace reaches its SIP port through another
(``10.253.N.0/24``). ``ansible-playbook`` runs on the host against it exactly as a user runs it
against a server.

The container has no route to a package mirror, so the packages the role asks for are already
in the cached image and the role's package task only checks them (``floodguard_apt_update_cache:
false``, the documented setting for offline hosts); floodguard and its Python dependencies go in
offline from the wheelhouse the role builds on the controller, with a Python of the container's
minor version (``SUITES``).

Everything (container, overlay mount, namespaces, veths, SSH masters, processes) is removed in
teardown, also on failure. test_deploy.py carries
``pytestmark = pytest.mark.root(*REQUIRED_TOOLS)``: missing root or tools fail the tests, they
are never skipped (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from . import wheelcache
from .images import CACHE_ROOT, HOSTNAME, build_image, sh

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
SITE = ANSIBLE_DIR / "site.yml"
UNIT_DIR = REPO / "floodguard" / "systemd"
UNITS = ("floodguard-rules.service", "floodguard.service", "floodguard-registrar.service")
ASSETS = REPO / "tests" / "assets"

# The Debian releases the role is tested on -> their Python's minor version (the controller
# builds the wheels with a Python of that version: see build_python).
SUITES = {"bookworm": "3.11", "trixie": "3.13"}

SIP_PORT = 5060
ACCOUNTS = {"1001": "Phone-1001-secret", "1002": "Phone-1002-secret"}
# What the deployment tests run (Debian packages debootstrap, systemd-container, ansible-core,
# openssh-client, iproute2, ipset, iptables, sip-tester, sipvicious).
REQUIRED_TOOLS = ("debootstrap", "systemd-nspawn", "ansible-playbook", "ssh", "ssh-keygen",
                  "ip", "ipset", "iptables-nft-save", "sipp", "svcrack")


def build_python(suite: str) -> str:
    """A Python of the suite's minor version, with pip, to build the wheels on the controller:
    this venv's when it has that version, else ``pythonX.Y`` on PATH or pyenv's; fails loudly
    naming what is missing."""
    version = SUITES[suite]
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        return sys.executable
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [shutil.which(f"python{version}"),
                  *map(str, sorted(pyenv.glob(f"versions/{version}.*/bin/python{version}")))]
    for python in filter(None, candidates):
        if sh([python, "-m", "pip", "--version"], check=False).returncode == 0:
            return python
    pytest.fail(f"Debian {suite} runs Python {version}: the role builds its wheels on the "
                f"controller with a Python {version} that has pip, and there is none here "
                f"(python{version} on PATH or under {pyenv}/versions)", pytrace=False)


def ansible_env(folder: Path) -> dict[str, str]:
    """The environment for an Ansible command: plain output and an empty ansible.cfg, so a
    config file elsewhere on the machine cannot change what the tests see."""
    cfg = folder / "ansible.cfg"
    cfg.write_text("[defaults]\n")
    return dict(os.environ, ANSIBLE_CONFIG=str(cfg), ANSIBLE_NOCOLOR="1",
                ANSIBLE_FORCE_COLOR="0")



# ---------------------------------------------------------------- the container


@dataclass
class Container:
    """A Debian container booted with systemd-nspawn in a namespace the test owns."""

    image: Path
    work: Path
    suite: str = "bookworm"
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    net: int = 0
    boots: int = 0
    proc: subprocess.Popen[bytes] | None = None
    mounted: bool = False
    namespaces: list[str] = field(default_factory=list)
    first_run: PlaybookRun | None = None
    fresh_check_run: PlaybookRun | None = None  # --check before the first run
    wheelhouse: Path | None = None  # the role's, on the controller (default: in work)

    def __post_init__(self) -> None:
        used = sh(["ip", "-4", "-o", "addr"]).stdout
        for _ in range(100):
            self.net = 1 + secrets.randbelow(250)
            if f" 10.254.{self.net}." not in used and f" 10.253.{self.net}." not in used:
                break
        self.key = self.work / "id_ed25519"
        self.control_dir = self.work / "cp"
        self.control_dir.mkdir(exist_ok=True)

    # -- names and addresses
    @property
    def ns(self) -> str:
        """The container's network namespace."""
        return f"fgd-{self.tag}-sip"

    @property
    def client_ns(self) -> str:
        """The client namespace: a phone and an attacker."""
        return f"fgd-{self.tag}-cli"

    @property
    def machine(self) -> str:
        return f"fgd-{self.tag}"

    @property
    def host_ip(self) -> str:
        return f"10.254.{self.net}.1"

    @property
    def ip(self) -> str:
        """The container's address on the control link (SSH)."""
        return f"10.254.{self.net}.2"

    @property
    def sip_ip(self) -> str:
        """The container's SIP address."""
        return f"10.253.{self.net}.1"

    @property
    def attacker_ip(self) -> str:
        """The client namespace's primary address: svcrack always sends from it."""
        return f"10.253.{self.net}.66"

    @property
    def phone_ip(self) -> str:
        return f"10.253.{self.net}.10"

    @property
    def root(self) -> Path:
        return self.work / "root"

    # -- setup
    def prepare(self) -> None:
        """Overlay on the cached image, SSH key, namespaces and links."""
        for name in ("upper", "ovlwork", "root"):
            (self.work / name).mkdir(exist_ok=True)
        sh(["mount", "-t", "overlay", "overlay", "-o",
            f"lowerdir={self.image},upperdir={self.work / 'upper'},"
            f"workdir={self.work / 'ovlwork'}", str(self.root)])
        self.mounted = True
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "floodguard-deploy-test",
            "-f", str(self.key)])
        ssh_dir = self.root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        (ssh_dir / "authorized_keys").chmod(0o600)
        sh(["ip", "netns", "add", self.client_ns])
        self.namespaces.append(self.client_ns)
        self.netns_run(self.client_ns, "ip", "link", "set", "lo", "up")
        self.wire()

    def netns_run(self, ns: str, *argv: str, check: bool = True, timeout: float = 120
                  ) -> subprocess.CompletedProcess[str]:
        """Run a command inside a namespace."""
        return sh(["ip", "netns", "exec", ns, *argv], check=check, timeout=timeout)

    def wire(self) -> None:
        """(Re)create the container's namespace and its two links; a fresh one is a fresh
        kernel network state, as after a real reboot."""
        sh(["ip", "netns", "add", self.ns])
        if self.ns not in self.namespaces:
            self.namespaces.insert(0, self.ns)
        host_if, sip_if = f"fgd{self.tag}h", f"fgd{self.tag}s"
        sh(["ip", "link", "add", host_if, "type", "veth", "peer", "name", "ctl0",
            "netns", self.ns])
        sh(["ip", "addr", "add", f"{self.host_ip}/30", "dev", host_if])
        sh(["ip", "link", "set", host_if, "up"])
        self.netns_run(self.ns, "ip", "link", "set", "lo", "up")
        self.netns_run(self.ns, "ip", "addr", "add", f"{self.ip}/30", "dev", "ctl0")
        self.netns_run(self.ns, "ip", "link", "set", "ctl0", "up")
        self.netns_run(self.ns, "ip", "link", "add", "sip0", "type", "veth", "peer", "name",
                       sip_if, "netns", self.client_ns)
        self.netns_run(self.ns, "ip", "addr", "add", f"{self.sip_ip}/24", "dev", "sip0")
        self.netns_run(self.ns, "ip", "link", "set", "sip0", "up")
        # The attacker's address first: it is the primary one, which svcrack sends from.
        for address in (self.attacker_ip, self.phone_ip):
            self.netns_run(self.client_ns, "ip", "addr", "add", f"{address}/24", "dev", sip_if)
        self.netns_run(self.client_ns, "ip", "link", "set", sip_if, "up")

    def unwire(self) -> None:
        """Delete the container's namespace and wait until its veth pairs are gone (the kernel
        dismantles a namespace asynchronously)."""
        sh(["ip", "netns", "del", self.ns], check=False)
        deadline = time.monotonic() + 15
        while sh(["ip", "link", "show", f"fgd{self.tag}h"], check=False).returncode == 0:
            if time.monotonic() > deadline:
                sh(["ip", "link", "del", f"fgd{self.tag}h"], check=False)
                break
            time.sleep(0.1)

    # -- boot and shutdown
    def boot(self, timeout: float = 90) -> None:
        """Boot with systemd-nspawn and wait for SSH and for systemd to finish starting."""
        self.boots += 1
        log = open(self.work / f"boot-{self.boots}.log", "wb")  # noqa: SIM115 — closed below
        try:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "--boot", "--register=no", "--keep-unit",
                 f"--network-namespace-path=/run/netns/{self.ns}",
                 "--capability=CAP_NET_ADMIN,CAP_NET_RAW", f"--machine={self.machine}",
                 "--console=read-only", "--link-journal=no", "-D", str(self.root)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the container exited ({self.proc.returncode}) while "
                                     f"booting:\n{self.boot_log()}")
            probe = self.ssh("true", check=False, timeout=10, connect_timeout=2)
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"no SSH into the container after {timeout:.0f}s:\n"
                                     f"{probe.stderr}\n{self.boot_log()}")
            time.sleep(0.5)
        state = self.ssh("systemctl is-system-running --wait", check=False, timeout=timeout)
        if state.stdout.strip() not in ("running", "degraded"):
            raise AssertionError(f"systemd did not finish booting: {state.stdout}{state.stderr}")

    def boot_log(self) -> str:
        path = self.work / f"boot-{self.boots}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def reboot(self, timeout: float = 90) -> int:
        """``systemctl reboot`` inside; returns systemd-nspawn's exit code once it is down."""
        assert self.proc is not None
        self.ssh("systemctl reboot", check=False, timeout=30)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the container did not shut down:\n{self.boot_log()}") from None
        self.close_ssh_masters()
        return code

    def poweroff(self) -> None:
        """Stop the container: SIGTERM to nspawn is an orderly shutdown, then SIGKILL."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    # -- SSH
    def ssh_options(self) -> list[str]:
        # the control socket's path (%C: 40 hex digits, plus a random suffix while it is made)
        # must stay under the 107 bytes of a Unix socket path
        return ["-i", str(self.key), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "-o", "BatchMode=yes", "-o", "ControlMaster=auto",
                "-o", f"ControlPath={self.control_dir}/%C", "-o", "ControlPersist=300"]

    def ssh(self, command: str, *, check: bool = True, timeout: float = 120,
            connect_timeout: int = 10) -> subprocess.CompletedProcess[str]:
        """Run a shell command in the container as root over SSH."""
        return sh(["ssh", *self.ssh_options(), "-o", f"ConnectTimeout={connect_timeout}",
                   f"root@{self.ip}", command], check=check, timeout=timeout)

    def close_ssh_masters(self) -> None:
        for socket_path in self.control_dir.glob("*"):
            sh(["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "root@" + self.ip],
               check=False, timeout=10)
            socket_path.unlink(missing_ok=True)

    # -- Ansible
    def write_inventory(self, extra: dict[str, Any] | None = None) -> Path:
        """The inventory a user would write for this host (YAML; JSON is YAML)."""
        variables: dict[str, Any] = {
            # floodguard_build_python: a Python of the hosts' minor version
            "floodguard_build_python": build_python(self.suite),
            "floodguard_wheelhouse": str(self.wheelhouse or self.work / "wheelhouse"),
            # offline host: the packages are checked, the apt cache is not refreshed
            "floodguard_apt_update_cache": False,
            # svcrack announces itself as friendly-scanner: with the scanner layer on it is
            # dropped before one guess is answered, so nothing would prove the guard bans it.
            "floodguard_scanner_user_agents": [],
            "floodguard_suspension_suspend_time": 1800,
            "floodguard_registrar_time_to_live": 600,
            "floodguard_accounts": [{"user": u, "password": p} for u, p in ACCOUNTS.items()],
            # the role's registrar is off by default (it would take 5060 from a Kamailio)
            "floodguard_registrar_enabled": True,
        }
        variables.update(extra or {})
        inventory = {"all": {"children": {"floodguard": {
            "hosts": {HOSTNAME: {
                "ansible_host": self.ip,
                "ansible_user": "root",
                "ansible_ssh_private_key_file": str(self.key),
                "ansible_ssh_common_args": "-o StrictHostKeyChecking=no "
                                           "-o UserKnownHostsFile=/dev/null",
                "ansible_python_interpreter": "/usr/bin/python3",
            }},
            "vars": variables,
        }}}}
        path = self.work / "inventory.yml"
        path.write_text(json.dumps(inventory, indent=2) + "\n")
        return path

    def playbook(self, *args: str, extra: dict[str, Any] | None = None,
                 check: bool = True) -> PlaybookRun:
        """``ansible-playbook -i inventory ansible/site.yml`` from the checkout."""
        inventory = self.write_inventory(extra)
        env = dict(ansible_env(self.work), ANSIBLE_PIPELINING="1",
                   ANSIBLE_SSH_CONTROL_PATH_DIR=str(self.control_dir))
        started = time.monotonic()
        with wheelcache.locked(self.wheelhouse) if self.wheelhouse else contextlib.nullcontext():
            result = sh(["ansible-playbook", "-i", str(inventory), str(SITE), *args],
                        check=False, timeout=900, env=env, cwd=REPO)
        run = PlaybookRun(result.returncode, result.stdout + result.stderr,
                          time.monotonic() - started)
        (self.work / f"ansible-{int(started)}.log").write_text(run.output)
        if check and (result.returncode != 0 or run.recap.get("failed", 1) != 0):
            journal = self.ssh("journalctl --no-pager -n 60 -u floodguard-rules -u floodguard "
                               "-u floodguard-registrar", check=False, timeout=30)
            raise AssertionError(f"ansible-playbook failed ({result.returncode}):\n"
                                 f"{run.output[-8000:]}\n--- journal:\n{journal.stdout}")
        return run

    # -- teardown
    def destroy(self) -> None:
        """Remove everything this container made, whatever state it is in."""
        self.close_ssh_masters()
        self.poweroff()
        for ns in self.namespaces:
            pids = sh(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            sh(["ip", "netns", "del", ns], check=False)
        sh(["ip", "link", "del", f"fgd{self.tag}h"], check=False)
        if self.mounted:
            if sh(["umount", str(self.root)], check=False).returncode != 0:
                sh(["umount", "-l", str(self.root)], check=False)
            self.mounted = False
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.machine}", ignore_errors=True)
        shutil.rmtree(f"/run/systemd/nspawn/unix-export/{self.machine}", ignore_errors=True)
        for name in ("upper", "ovlwork"):
            shutil.rmtree(self.work / name, ignore_errors=True)


@dataclass
class PlaybookRun:
    """One ansible-playbook run: exit code, output, the recap of the host, seconds."""

    returncode: int
    output: str
    seconds: float

    @property
    def recap(self) -> dict[str, int]:
        match = re.search(rf"^{re.escape(HOSTNAME)}\s*:\s*(.*)$", self.output, re.MULTILINE)
        if match is None:
            return {}
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match[1])}

    def changed_tasks(self) -> list[str]:
        """The names of the tasks that reported a change (for a useful failure message)."""
        names, current = [], ""
        for line in self.output.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                current = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith("changed:"):
                names.append(current)
        return names


@pytest.fixture(scope="module")
def container(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Container]:
    """A booted container of the suite in ``request.param`` (test_deploy.py parametrizes it),
    checked with ``ansible-playbook --check`` while new, then deployed once (the runs are
    kept). The role's wheelhouse is the suite's cached one (wheelcache.py)."""
    suite = request.param
    box = Container(build_image(suite), tmp_path_factory.mktemp(suite), suite=suite,
                    wheelhouse=wheelcache.wheelhouse_for(CACHE_ROOT, suite, build_python(suite),
                                                          REPO))
    try:
        box.prepare()
        box.boot()
        box.fresh_check_run = box.playbook("--check", check=False)
        box.first_run = box.playbook()
        yield box
    finally:
        box.destroy()
