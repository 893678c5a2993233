"""A Vagrant box for the libvirt provider, built locally from Debian 12 packages and cached.

No prebuilt box is downloaded: debootstrap makes a Debian 12 root (the packages the role and the
lab's attacker need are in it, so the VMs need no mirror), which gets a ``vagrant`` user with
Vagrant's well-known insecure key (Vagrant swaps it for a fresh key on the first ``vagrant up``),
sshd, systemd-networkd (DHCP on eth0; Vagrant writes the private network beside it), and the
Debian cloud kernel. The root becomes an ext4 filesystem (``mkfs.ext4 -d``, no loop device) in a
qcow2 disk; the VM boots it with libvirt's direct kernel boot (the box's Vagrantfile names the
kernel and initrd shipped beside the disk), so there is no partition table and no boot loader.

The box file is cached under ``CACHE_ROOT`` keyed by suite, mirror, packages and recipe, like
the nspawn image of the deployment test (images.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from .images import (
    CACHE_ROOT,
    IMAGE_PACKAGES,
    cached,
    debian_mirror,
    debootstrap,
    prepare_image,
    sh,
)

# the VMs run Debian 12: the Vagrantfile's host-side Ansible builds their wheels with this
# checkout's Python 3.11
SUITE = "bookworm"

BOX_NAME = "floodguard/bookworm-local"
# The nspawn image's packages, plus what a VM needs to boot (kernel, udev), what Vagrant needs
# (sudo, rsync for the synced folder) and the lab attacker's tools.
BOX_PACKAGES = (*IMAGE_PACKAGES, "linux-image-cloud-amd64", "initramfs-tools", "udev", "kmod",
                "e2fsprogs", "netbase", "sudo", "rsync", "sip-tester", "sipvicious")
# Bump when the recipe below changes: a new cache entry is built.
BOX_RECIPE = "2"
DISK_GIB = 8
KERNEL_CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0 quiet"

BOX_VAGRANTFILE = f"""\
# Written by tests/deploy/vagrantbox.py: direct kernel boot of the disk's ext4 root.
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.kernel = File.join(File.dirname(__FILE__), "vmlinuz")
    lv.initrd = File.join(File.dirname(__FILE__), "initrd.img")
    lv.cmd_line = "{KERNEL_CMDLINE}"
  end
end
"""


def box_key(mirror: str) -> str:
    text = json.dumps([SUITE, mirror, sorted(BOX_PACKAGES), BOX_RECIPE, DISK_GIB])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def insecure_public_key() -> str:
    """Vagrant's well-known insecure public key, from the installed vagrant package."""
    found = sorted(Path("/usr/share/rubygems-integration/all/gems").glob("vagrant-*/keys/"
                                                                         "vagrant.pub"))
    found += sorted(Path("/opt/vagrant/embedded/gems").glob("**/vagrant-*/keys/vagrant.pub"))
    if not found:
        raise AssertionError("Vagrant's insecure key (keys/vagrant.pub) is not installed: "
                             "install the Debian package vagrant")
    return found[-1].read_text().strip() + "\n"


def _prepare_vm_root(root: Path) -> None:
    """What a VM needs beyond the container image: fstab, network, the vagrant user."""
    prepare_image(root)
    (root / "etc/fstab").write_text("/dev/vda / ext4 defaults,errors=remount-ro 0 1\n")
    network = root / "etc/systemd/network"
    network.mkdir(parents=True, exist_ok=True)
    # DHCP client id from the MAC: two VMs of one box must never share a lease
    (network / "10-eth0.network").write_text("[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n\n"
                                             "[DHCPv4]\nClientIdentifier=mac\n")
    # Each VM its own identity: systemd would copy D-Bus's machine id into the empty
    # /etc/machine-id, and sshd would offer the host keys debootstrap made, in every VM.
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    dropin = root / "etc/systemd/system/ssh.service.d"
    dropin.mkdir(parents=True)
    (dropin / "host-keys.conf").write_text(
        "[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\n"
        "ExecStartPre=/usr/sbin/sshd -t\n")
    sh(["chroot", str(root), "systemctl", "enable", "systemd-networkd"])
    sh(["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/bash", "vagrant"])
    (root / "etc/sudoers.d/vagrant").write_text("vagrant ALL=(ALL) NOPASSWD:ALL\n")
    (root / "etc/sudoers.d/vagrant").chmod(0o440)
    ssh_dir = root / "home/vagrant/.ssh"
    ssh_dir.mkdir(mode=0o700)
    (ssh_dir / "authorized_keys").write_text(insecure_public_key())
    (ssh_dir / "authorized_keys").chmod(0o600)
    sh(["chroot", str(root), "chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh"])
    # sshd answers at once even when the VM has no DNS
    (root / "etc/ssh/sshd_config.d/vagrant.conf").write_text("UseDNS no\n")


def _pack_box(root: Path, folder: Path) -> Path:
    """Disk, kernel, initrd, metadata and Vagrantfile into ``folder/floodguard.box``."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise AssertionError(f"no kernel or initrd in {root / 'boot'}")
    content = folder / "content"
    content.mkdir()
    shutil.copyfile(kernels[-1], content / "vmlinuz")
    shutil.copyfile(initrds[-1], content / "initrd.img")
    raw = folder / "disk.raw"
    sh(["mkfs.ext4", "-q", "-L", "root", "-d", str(root), str(raw), f"{DISK_GIB}G"],
       timeout=600)
    sh(["qemu-img", "convert", "-O", "qcow2", str(raw), str(content / "box.img")], timeout=600)
    raw.unlink()
    (content / "metadata.json").write_text(json.dumps(
        {"provider": "libvirt", "format": "qcow2", "virtual_size": DISK_GIB}) + "\n")
    (content / "Vagrantfile").write_text(BOX_VAGRANTFILE)
    box = folder / "floodguard.box"
    sh(["tar", "-cf", str(box), "-C", str(content), "metadata.json", "Vagrantfile", "box.img",
        "vmlinuz", "initrd.img"], timeout=600)
    shutil.rmtree(content)
    return box


def build_box() -> Path:
    """The cached box file (built with debootstrap on first use)."""
    mirror = debian_mirror()

    def build(staging: Path) -> None:
        debootstrap(SUITE, BOX_PACKAGES, staging / "root", mirror)
        _prepare_vm_root(staging / "root")
        _pack_box(staging / "root", staging)
        shutil.rmtree(staging / "root")
        (staging / "built.json").write_text(json.dumps(
            {"suite": SUITE, "mirror": mirror, "packages": BOX_PACKAGES,
             "recipe": BOX_RECIPE, "built": time.time()}) + "\n")
        for older in CACHE_ROOT.glob(f"vagrant-{SUITE}-*"):  # boxes of older recipes or mirrors
            shutil.rmtree(older, ignore_errors=True)

    entry = cached(CACHE_ROOT / f"vagrant-{SUITE}-{box_key(mirror)}", "floodguard.box", build)
    return entry / "floodguard.box"
