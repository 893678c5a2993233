"""The role's wheelhouse for the deployment tests, kept between runs under ``CACHE_ROOT``.

The role builds floodguard's wheel (mypyc: a minute or more) and collects its dependencies on
the controller, and reuses them on its next run when a key over the exact build inputs matches
(the ``.source-key`` file it writes: a hash of the copied package, setup.py, pyproject.toml and
README.md, the build Python's ``-VV``, the install mode and the hosts' marker environments; see
ansible/roles/floodguard/tasks/install.yml). A wheelhouse in the test's temporary folder made
every run rebuild; here it lives in ``CACHE_ROOT/wheelhouse/<suite>-<key>``, so a clean clone
whose package did not change since the last run installs the wheels built then.

The folder's key (suite, build Python, the bytes of the files the role copies) only keeps
different sources apart; whether a wheel is reused is the role's own decision by its key, so a
folder can never serve a wheel of other sources (test_deploy.py checks that a changed byte of
the package rebuilds). Playbook runs that may build take the folder's lock; the least recently
used folders beyond ``KEEP`` per suite are removed.

``sdist_digest`` is the key test_wheel_install.py keeps its wheel (built from the sdist) under.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

# what the role copies to build the wheel (install.yml), and what it leaves out of that copy
WHEEL_INPUTS = ("floodguard", "setup.py", "pyproject.toml", "README.md")
LEFT_OUT = ("__pycache__",)
LEFT_OUT_SUFFIXES = (".so", ".egg-info")
KEEP = 4


def wheel_inputs_digest(source: Path) -> str:
    """sha256 over the names and bytes of the files the role copies to build the wheel."""
    digest = hashlib.sha256()
    for top in WHEEL_INPUTS:
        path = source / top
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            parts = file.relative_to(source).parts
            if any(part in LEFT_OUT or part.endswith(LEFT_OUT_SUFFIXES) for part in parts):
                continue
            digest.update(f"{'/'.join(parts)}\0{file.stat().st_size}\0".encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def wheelhouse_for(cache_root: Path, suite: str, build_python: str, source: Path) -> Path:
    """The suite's cached wheelhouse folder under cache_root for the package in source and the
    build Python (created empty on first use; the role fills it)."""
    version = subprocess.run([build_python, "-VV"], capture_output=True, text=True, check=True,
                             timeout=60).stdout.strip()
    key = hashlib.sha256(f"{suite}\0{version}\0{wheel_inputs_digest(source)}".encode())
    folder = cache_root / "wheelhouse" / f"{suite}-{key.hexdigest()[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    prune(folder, f"{suite}-*")
    return folder


def prune(keep: Path, pattern: str) -> None:
    """Remove the least recently used folders matching pattern beside ``keep`` beyond KEEP
    (never ``keep``, never one whose lock another run holds)."""
    os.utime(keep)
    folders = sorted((p for p in keep.parent.glob(pattern) if p != keep and p.is_dir()),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in folders[KEEP - 1:]:
        with open(lock_file(old), "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(old, ignore_errors=True)
            lock_file(old).unlink(missing_ok=True)


def lock_file(folder: Path) -> Path:
    """The folder's lock, beside it (the role copies everything in a wheelhouse to the hosts)."""
    return folder.with_name(folder.name + ".lock")


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the folder's lock: one playbook run at a time may build into it."""
    with open(lock_file(folder), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def sdist_digest(sdist: Path) -> str:
    """sha256 over the names (below the sdist's top folder) and bytes of an sdist's files: the
    inputs of a wheel built from it, without the archive's timestamps."""
    digest = hashlib.sha256()
    with tarfile.open(sdist) as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            if not member.isfile():
                continue
            data = archive.extractfile(member)
            assert data is not None
            content = data.read()
            name = member.name.split("/", 1)[1] if "/" in member.name else member.name
            digest.update(f"{name}\0{member.mode & 0o777:o}\0{len(content)}\0".encode())
            digest.update(content)
    return digest.hexdigest()
