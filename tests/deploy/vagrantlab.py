"""The Vagrant lab booted for real: libvirt, the accelerator check, ``vagrant`` as a user runs it.

``Lab`` runs ``vagrant`` in the checkout with its state kept out of the user's: ``VAGRANT_HOME``
under the test cache (the added box stays there between runs, and libvirt's QEMU user can read
the box's kernel, which ``~root`` would hide) and ``VAGRANT_DOTFILE_PATH`` in the test's folder.

libvirtd is started when it is not running (with systemctl when systemd runs, else as a daemon
process) and stopped again after the test if the test started it. The libvirt ``default``
storage pool is defined when missing. ``destroy`` removes the VMs and the networks
vagrant-libvirt made, whatever state the lab is in.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import REPO, ansible_env
from .images import CACHE_ROOT, sh
from .vagrantbox import BOX_NAME, box_key, debian_mirror

VIRSH = ["virsh", "-c", "qemu:///system"]
# Accelerator: "kvm" (default) needs a KVM that boots a stock Debian kernel; "tcg" opts into
# QEMU's software emulation (libvirt driver qemu), for machines without one.
ACCEL_ENV = "FLOODGUARD_VAGRANT_ACCEL"


def networks() -> list[str]:
    """The libvirt networks defined now (the lab's are removed after the test)."""
    return sh([*VIRSH, "net-list", "--all", "--name"], check=False).stdout.split()


def _pids(name: str) -> list[int]:
    found = sh(["pgrep", "-x", name], check=False).stdout.split()
    return [int(pid) for pid in found]


@contextlib.contextmanager
def libvirt_running() -> Iterator[None]:
    """libvirtd (and virtlogd) up for the test; stopped afterwards when the test started them."""
    started: list[int] = []
    if sh([*VIRSH, "version"], check=False, timeout=30).returncode != 0:
        if Path("/run/systemd/system").is_dir():
            sh(["systemctl", "start", "virtlogd.socket", "libvirtd.service"])
        else:
            for daemon in ("virtlogd", "libvirtd"):
                if not _pids(daemon):
                    before = set(_pids(daemon))
                    sh([daemon, "-d"])
                    started += [pid for pid in _pids(daemon) if pid not in before]
        deadline = time.monotonic() + 30
        while sh([*VIRSH, "version"], check=False, timeout=30).returncode != 0:
            if time.monotonic() > deadline:
                pytest.fail("libvirtd does not answer on qemu:///system", pytrace=False)
            time.sleep(0.5)
    if sh([*VIRSH, "pool-info", "default"], check=False).returncode != 0:
        sh([*VIRSH, "pool-define-as", "default", "dir", "--target", "/var/lib/libvirt/images"])
        sh([*VIRSH, "pool-build", "default"], check=False)
    if "running" not in sh([*VIRSH, "pool-info", "default"]).stdout:
        sh([*VIRSH, "pool-start", "default"])
    try:
        yield
    finally:
        for pid in reversed(started):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def libvirt_driver(box: Path, work: Path) -> str:
    """The libvirt driver for the VMs: kvm when KVM boots the box's kernel, qemu when the user
    opted into software emulation; otherwise the test fails with the reason."""
    accel = os.environ.get(ACCEL_ENV, "kvm")
    if accel == "tcg":
        return "qemu"
    if accel != "kvm":
        pytest.fail(f"{ACCEL_ENV} must be kvm or tcg, not {accel!r}", pytrace=False)
    reason = kvm_problem(box, work)
    if reason:
        pytest.fail(f"KVM cannot run the Vagrant VMs on this machine: {reason}. "
                    f"Set {ACCEL_ENV}=tcg to boot them with QEMU's software emulation "
                    "instead (much slower).", pytrace=False)
    return "kvm"


def kvm_problem(box: Path, work: Path, timeout: float = 30) -> str:
    """Why KVM cannot boot the box's kernel here ("" when it can): /dev/kvm must open, and QEMU
    with KVM must get the kernel to print its banner within ``timeout`` seconds."""
    cpu = Path("/proc/cpuinfo").read_text()
    modules = ", ".join(sorted(p.name for p in Path("/sys/module").glob("kvm*"))) or "none"
    where = (f"vmx/svm in /proc/cpuinfo; kernel modules {modules}"
             if re.search(r"\b(vmx|svm)\b", cpu) else
             f"no vmx/svm in /proc/cpuinfo: no hardware or nested virtualization; kernel "
             f"modules {modules}" + (" (PVM runs only guest kernels built for it)"
                                     if "kvm_pvm" in modules else ""))
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
    except OSError as exc:
        return f"/dev/kvm: {exc.strerror} ({where})"
    with tarfile.open(box) as tar:
        member = tar.extractfile("vmlinuz")
        assert member is not None
        kernel = work / "probe-vmlinuz"
        kernel.write_bytes(member.read())
    serial = work / "probe-serial.log"
    result = subprocess.run(
        ["timeout", str(timeout), "qemu-system-x86_64", "-enable-kvm", "-cpu", "host", "-m",
         "256", "-smp", "1", "-display", "none", "-no-reboot", "-serial", f"file:{serial}",
         "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout + 30)
    console = serial.read_text(errors="replace") if serial.exists() else ""
    if "Linux version" in console:
        return ""
    stderr = " ".join(result.stderr.split())[-400:]
    return (f"QEMU with KVM did not boot the Debian kernel within {timeout:.0f}s ({where}; "
            f"qemu exit {result.returncode}: {stderr or 'no error'}; console ends "
            f"{console.strip()[-120:]!r})")


@dataclass
class Lab:
    """The Vagrantfile's two VMs, driven with the ``vagrant`` command from the checkout."""

    work: Path
    box: Path
    driver: str
    env: dict[str, str] = field(default_factory=dict)
    networks_before: list[str] = field(default_factory=networks)

    def __post_init__(self) -> None:
        self.box_name = f"{BOX_NAME}-{box_key(debian_mirror())}"
        extra = {
            # the box has every package; the VMs use no mirror
            "floodguard_apt_update_cache": False,
            # the wheels are built by this checkout's venv Python (3.11, like the VMs')
            "floodguard_build_python": sys.executable,
            "floodguard_wheelhouse": str(self.work / "wheelhouse"),
        }
        self.env = dict(
            ansible_env(self.work), VAGRANT_HOME=str(CACHE_ROOT / "vagrant.d"),
            VAGRANT_DOTFILE_PATH=str(self.work / "dotvagrant"), VAGRANT_CHECKPOINT_DISABLE="1",
            VAGRANT_DEFAULT_PROVIDER="libvirt", FLOODGUARD_BOX=self.box_name,
            FLOODGUARD_LIBVIRT_DRIVER=self.driver, FLOODGUARD_ANSIBLE="host",
            FLOODGUARD_VARS=json.dumps(extra),
            ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_PIPELINING="1")

    def vagrant(self, *args: str, check: bool = True, timeout: float = 300
                ) -> subprocess.CompletedProcess[str]:
        return sh(["vagrant", *args], check=check, timeout=timeout, env=self.env, cwd=REPO)

    def add_box(self) -> None:
        """Add the box under its cache-keyed name unless this VAGRANT_HOME has it already;
        boxes of older recipes go, with the disk images libvirt copied from them."""
        listed = [line.split()[0] for line in self.vagrant("box", "list").stdout.splitlines()
                  if line.startswith(BOX_NAME + "-")]
        for old in (name for name in listed if name != self.box_name):
            self.vagrant("box", "remove", "--force", "--all", old, check=False)
        volume = self.box_name.replace("/", "-VAGRANTSLASH-") + "_vagrant_box_image_"
        stem = BOX_NAME.replace("/", "-VAGRANTSLASH-") + "-"
        for line in sh([*VIRSH, "vol-list", "default"], check=False).stdout.splitlines()[2:]:
            name = line.split()[0] if line.split() else ""
            if name.startswith(stem) and not name.startswith(volume):
                sh([*VIRSH, "vol-delete", "--pool", "default", name], check=False)
        if self.box_name not in listed:
            self.vagrant("box", "add", "--name", self.box_name, str(self.box), timeout=600)

    def up(self, timeout: float) -> float:
        """``vagrant up``: boot and provision both VMs; returns the seconds it took."""
        self.networks_before = networks()
        started = time.monotonic()
        log = self.work / "vagrant-up.log"  # written as it goes: `vagrant up` takes minutes
        with open(log, "w") as out:
            code = subprocess.run(["vagrant", "up", "--provider", "libvirt"], stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=self.env, cwd=REPO, timeout=timeout).returncode
        if code != 0:
            raise AssertionError(f"vagrant up failed ({code}):\n{log.read_text()[-8000:]}")
        return time.monotonic() - started

    def ssh(self, machine: str, command: str, *, check: bool = True, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        """``vagrant ssh MACHINE -c COMMAND``, as the README runs it."""
        return self.vagrant("ssh", machine, "-c", command, check=check, timeout=timeout)

    def destroy(self) -> None:
        """Remove the VMs and the networks they used, whatever state they are in."""
        result = self.vagrant("destroy", "-f", check=False, timeout=300)
        domains = sh([*VIRSH, "list", "--all", "--name"], check=False).stdout.split()
        prefix = REPO.name + "_"
        for domain in (d for d in domains if d.startswith(prefix)):
            sh([*VIRSH, "destroy", domain], check=False)
            sh([*VIRSH, "undefine", domain, "--remove-all-storage"], check=False)
        for net in set(networks()) - set(self.networks_before):
            sh([*VIRSH, "net-destroy", net], check=False)
            sh([*VIRSH, "net-undefine", net], check=False)
        shutil.rmtree(self.work / "dotvagrant", ignore_errors=True)
        if result.returncode != 0:
            print(f"vagrant destroy: {result.stdout}{result.stderr}", file=sys.stderr)
