"""The deployment tests' cached Debian roots, and the command runner they are built with.

A root is a ``debootstrap --variant=minbase`` of a suite with ``IMAGE_PACKAGES``, made a quiet
offline server (hostname, no apt timers, an empty machine-id) and kept in ``CACHE_ROOT`` under a
hash of its suite, mirror, packages and recipe; ``cached`` is the one way an entry there is
built (the wheel caches use it too). The mirror is the one this host's apt uses.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

CACHE_ROOT = Path(os.environ.get("FLOODGUARD_TEST_CACHE", "/var/cache/floodguard-test"))
# What the role would install (vars/Debian.yml), what Ansible needs on a host (python3-apt for
# the apt module), and what a booted server has (systemd, sshd, dbus).
IMAGE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "procps", "python3", "python3-apt",
    "python3-venv", "python3-setuptools", "iptables", "ipset", "conntrack", "iproute2",
    "libnetfilter-queue1",
)
# Bump when the image recipe below changes: a new cache entry is built.
IMAGE_RECIPE = "1"
HOSTNAME = "fg-sip"


def sh(argv: list[str], *, check: bool = True, timeout: float = 120, env: dict[str, str] | None
       = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise with its whole output."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                            cwd=cwd, stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n"
                             f"{result.stdout}{result.stderr}")
    return result



def debian_mirror() -> str:
    """The Debian mirror this host's apt uses for its release's main component (one-line or
    deb822 sources); it serves the other releases too."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    # a release itself (bookworm), not bookworm-updates or bookworm-security
    release = re.compile(r"[a-z]+")
    for path in sources:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line:
                        continue
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
                if ("deb" in fields.get("types", "").split()
                        and any(release.fullmatch(s) for s in fields.get("suites", "").split())
                        and "main" in fields.get("components", "").split()):
                    return fields["uris"].split()[0]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 4 and words[0] == "deb" and release.fullmatch(words[2]) \
                        and "main" in words[3:]:
                    return words[1]
    pytest.fail("no Debian main mirror in /etc/apt/sources.list(.d): debootstrap needs one",
                pytrace=False)


def image_key(suite: str, mirror: str) -> str:
    """The cache key: suite, mirror, packages and recipe."""
    text = json.dumps([suite, mirror, sorted(IMAGE_PACKAGES), IMAGE_RECIPE])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare_image(root: Path) -> None:
    """Make the debootstrapped root a bootable, quiet, offline server."""
    (root / "etc/hostname").write_text(HOSTNAME + "\n")
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n"
                                    "::1 localhost ip6-localhost ip6-loopback\n")
    # No mirror is reachable: the apt timers would only hold the dpkg lock and fail.
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
                 "fstrim.timer", "e2scrub_reap.service"):
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    for wants in (root / "etc/systemd/system").glob("*.wants/*"):
        if wants.name in ("apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
                          "fstrim.timer", "e2scrub_reap.service"):
            wants.unlink()
    # A fresh machine-id at every boot of a copy, like a new server.
    (root / "etc/machine-id").write_text("")
    sh(["chroot", str(root), "apt-get", "clean"])


def debootstrap(suite: str, packages: tuple[str, ...], root: Path, mirror: str) -> None:
    """A minimal Debian root of the suite with the packages, in root; fails with its log."""
    result = sh(["debootstrap", "--variant=minbase", "--components=main",
                 "--include=" + ",".join(packages), suite, str(root), mirror], check=False,
                timeout=1800)
    if result.returncode != 0:
        log = root / "debootstrap/debootstrap.log"
        detail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise AssertionError(f"debootstrap failed ({result.returncode}):\n"
                             f"{result.stdout[-3000:]}{result.stderr[-3000:]}{detail}")


def cached(entry: Path, done: str, build: Callable[[Path], None]) -> Path:
    """The cache entry ``entry`` (a folder under CACHE_ROOT), made by ``build(staging)`` on
    first use: one builder at a time, in a staging folder renamed into place once ``build``
    has written ``done`` in it, so an interrupted build never looks complete."""
    if (entry / done).is_file():
        return entry
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (entry / done).is_file():
            return entry
        staging = entry.parent / f".{entry.name}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            build(staging)
            if not (staging / done).is_file():
                raise AssertionError(f"the build of {entry} wrote no {done}")
            shutil.rmtree(entry, ignore_errors=True)
            staging.rename(entry)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return entry


def build_image(suite: str = "bookworm") -> Path:
    """The cached Debian root of a suite (built with debootstrap on the first run): its root
    folder."""
    mirror = debian_mirror()

    def build(staging: Path) -> None:
        debootstrap(suite, IMAGE_PACKAGES, staging / "root", mirror)
        prepare_image(staging / "root")
        (staging / "complete").write_text(
            json.dumps({"suite": suite, "mirror": mirror, "packages": IMAGE_PACKAGES,
                        "recipe": IMAGE_RECIPE, "built": time.time()}) + "\n")

    return cached(CACHE_ROOT / f"{suite}-{image_key(suite, mirror)}", "complete", build) / "root"
