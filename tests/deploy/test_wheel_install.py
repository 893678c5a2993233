"""The built wheel and sdist are complete: installed alone, floodguard works outside the checkout.

Built once for the module (``python -m build``: the sdist from a copy of the checkout, then the
wheel from that sdist, so the sdist is proven to hold what the wheel needs; the wheel is kept
between runs keyed by the sdist's content and the Python, see ``built``):

- the wheel carries the units and the ruleset templates (package data), the sdist the templates,
  the units and the C and Python sources;
- scapy is no run-time dependency (only the dev extra's), and the installed floodguard does not
  have it;
- installed into a fresh venv and run from a folder outside the checkout (nothing imported from
  the source tree), floodguard finds its templates in the package, ``apply --dry-run`` renders
  what the checkout renders, and a real ``apply`` in a network namespace installs the chains
  and sets there (``remove`` takes them out again).
"""

from __future__ import annotations

import email
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from floodguard.kernel.rules import PACKAGE_DIR
from tests.integration.conftest import make_netns  # noqa: F401  (the fixture)

from . import wheelcache
from .conftest import REPO, UNITS
from .images import CACHE_ROOT, cached, sh

TEMPLATES = sorted(p.name for p in PACKAGE_DIR.glob("*.toml"))
CHECKOUT_FLOODGUARD = Path(sys.executable).with_name("floodguard")


@dataclass(frozen=True)
class Built:
    wheel: Path
    sdist: Path


@dataclass(frozen=True)
class Installed:
    venv: Path
    cwd: Path  # outside the checkout
    env: dict[str, str]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=self.cwd,
                                env=self.env, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n"
                                 f"{result.stdout}{result.stderr}")
        return result

    @property
    def floodguard(self) -> str:
        return str(self.venv / "bin" / "floodguard")

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """sdist and wheel of this checkout (a copy: the build leaves nothing in the checkout). The
    wheel is built from the sdist, and kept in ``CACHE_ROOT/wheels`` keyed by the sdist's
    content and the build Python: compiling takes minutes, and only a different sdist (or
    Python) can make a different wheel."""
    top = tmp_path_factory.mktemp("build")
    source = top / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*cache", ".hypothesis",
        "*.so"))
    sh([sys.executable, "-m", "build", "--sdist", "--outdir", str(top / "out"), str(source)],
       timeout=600)
    (sdist,) = (top / "out").glob("floodguard-*.tar.gz")
    python = sh([sys.executable, "-VV"]).stdout.strip()
    key = hashlib.sha256(f"{python}\0{wheelcache.sdist_digest(sdist)}".encode()).hexdigest()

    def build(staging: Path) -> None:
        unpacked = top / "unpacked"
        with tarfile.open(sdist) as archive:
            archive.extractall(unpacked, filter="data")
        (tree,) = unpacked.iterdir()
        # mypyc compiles the per-packet modules: 1 to 2 minutes, several on a loaded machine
        sh([sys.executable, "-m", "build", "--wheel", "--outdir", str(staging), str(tree)],
           timeout=1500)
        (wheel,) = staging.glob("floodguard-*.whl")
        (staging / "complete").write_text(f"{wheel.name}\n{python}\n")

    entry = cached(CACHE_ROOT / "wheels" / key[:24], "complete", build)
    wheelcache.prune(entry, "[0-9a-f]*")
    (wheel,) = entry.glob("floodguard-*.whl")
    return Built(wheel, sdist)


@pytest.fixture(scope="module")
def installed(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """The wheel in a fresh venv, with its dependencies and nothing else."""
    top = tmp_path_factory.mktemp("installed")
    assert not top.resolve().is_relative_to(REPO)
    venv.create(top / "venv", with_pip=True)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "FLOODGUARD_RULES", "FLOODGUARD_CONFIG")}
    env["PATH"] = f"{top / 'venv' / 'bin'}:{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"
    sh([str(top / "venv" / "bin" / "pip"), "install", "--quiet", str(built.wheel)],
       timeout=600, env=env, cwd=top)
    (top / "work").mkdir()
    yield Installed(top / "venv", top / "work", env)


def test_wheel_ships_the_units_and_the_rules(built: Built) -> None:
    """The units and the ruleset templates are package data, byte for byte the checkout's."""
    wheel = zipfile.ZipFile(built.wheel)
    names = wheel.namelist()
    for unit in UNITS:
        assert f"floodguard/systemd/{unit}" in names, names
    assert TEMPLATES == ["ruleset.toml", "sets.toml", "tunables.toml"]
    for name in TEMPLATES:
        assert wheel.read(f"floodguard/rules/{name}") == (PACKAGE_DIR / name).read_bytes(), name


def test_sdist_holds_the_rules_units_and_sources(built: Built) -> None:
    with tarfile.open(built.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    wanted = {f"floodguard/rules/{name}" for name in TEMPLATES}
    wanted |= {f"floodguard/systemd/{unit}" for unit in UNITS}
    wanted |= {"setup.py", "pyproject.toml", "floodguard/sip/_scan.c", "floodguard/kernel/_nfq.c",
               "floodguard/kernel/_nfq_netlink.h", "floodguard/kernel/_nfq_packets.h",
               "floodguard/guard.py", "floodguard/capture.py"}
    assert wanted <= names, sorted(wanted - names)


def test_scapy_is_no_run_time_dependency(built: Built, installed: Installed) -> None:
    with zipfile.ZipFile(built.wheel) as wheel:
        meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        requires = email.message_from_bytes(wheel.read(meta)).get_all("Requires-Dist") or []
    scapy = [r for r in requires if r.lower().startswith("scapy")]
    assert scapy and all('extra == "dev"' in r for r in scapy), requires
    probe = installed.run(installed.python, "-c", "import scapy", check=False)
    assert probe.returncode != 0 and "No module named 'scapy'" in probe.stderr


def test_installed_package_finds_its_rules(installed: Installed) -> None:
    """Outside the checkout, the templates come from the installed package."""
    out = installed.run(installed.python, "-c", "import floodguard, floodguard.kernel.rules as r; "
                        "print(floodguard.__file__); print(r.rules_dir())").stdout.split("\n")
    package, folder = Path(out[0]).parent, Path(out[1])
    assert package.is_relative_to(installed.venv), package
    if Path("/etc/floodguard/rules/ruleset.toml").exists():
        pytest.fail("/etc/floodguard/rules overrides the package's templates on this host: "
                    "move it away to run this test", pytrace=False)
    assert folder == package / "rules", folder
    assert sorted(p.name for p in folder.glob("*.toml")) == TEMPLATES


def test_installed_apply_dry_run_renders_what_the_checkout_renders(
        installed: Installed, tmp_path: Path) -> None:
    config = tmp_path / "floodguard.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "state.db"}"\n')
    ours = installed.run(installed.floodguard, "apply", "--dry-run", "-c", str(config)).stdout
    assert "-A FLOODGUARD-SIP " in ours and "create floodguard-ban " in ours, ours
    checkout = sh([str(CHECKOUT_FLOODGUARD), "apply", "--dry-run", "-c", str(config)]).stdout
    assert ours == checkout


@pytest.mark.root("ip", "ipset", "iptables-nft-save")
def test_installed_apply_in_a_namespace(installed: Installed, make_netns, tmp_path: Path) -> None:  # noqa: F811
    """A real apply of the installed floodguard: its chains and sets are in the namespace."""
    ns = make_netns("whl")
    config = tmp_path / "floodguard.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "state.db"}"\n')
    env = dict(installed.env)
    applied = ns.run(installed.floodguard, "apply", "-c", str(config), env=env)
    assert "applied (nft backend)" in applied.stdout, applied.stdout + applied.stderr
    saved = ns.run("iptables-nft-save").stdout + ns.run("ip6tables-nft-save").stdout
    for chain in ("FLOODGUARD", "FLOODGUARD-SIP", "FLOODGUARD-RAW", "FLOODGUARD-OUT"):
        assert f":{chain} - " in saved, saved
    assert "-A INPUT -j FLOODGUARD" in saved and "-A PREROUTING -j FLOODGUARD-RAW" in saved
    sets = ns.run("ipset", "list", "-n").stdout.split()
    assert {"floodguard-ban", "floodguard-allow", "floodguard-ban-net6"} <= set(sets), sets
    ns.run(installed.floodguard, "remove", "-c", str(config), env=env)
    saved = ns.run("iptables-nft-save").stdout
    assert "FLOODGUARD" not in saved and "floodguard" not in ns.run("ipset", "list", "-n").stdout


def test_the_wheel_cache_key_is_the_sdists_content(tmp_path: Path) -> None:
    """The key ``built`` caches the wheel under: the same for an sdist packed again later (new
    timestamps), different for one changed byte, a renamed file or a changed mode."""
    def sdist(name: str, files: dict[str, tuple[bytes, int]], mtime: int) -> Path:
        path = tmp_path / name
        with tarfile.open(path, "w:gz") as archive:
            for member, (data, mode) in files.items():
                info = tarfile.TarInfo(f"floodguard-0.1.0/{member}")
                info.size, info.mode, info.mtime = len(data), mode, mtime
                archive.addfile(info, io.BytesIO(data))
        return path

    files = {"setup.py": (b"setup()\n", 0o644), "floodguard/guard.py": (b"x = 1\n", 0o644)}
    key = wheelcache.sdist_digest(sdist("a.tar.gz", files, 1))
    assert wheelcache.sdist_digest(sdist("b.tar.gz", files, 2)) == key
    changed = dict(files, **{"floodguard/guard.py": (b"x = 2\n", 0o644)})
    renamed = {"setup.py": files["setup.py"], "floodguard/guards.py": files["floodguard/guard.py"]}
    mode = dict(files, **{"setup.py": (b"setup()\n", 0o755)})
    others = [wheelcache.sdist_digest(sdist(f"{n}.tar.gz", f, 1))
              for n, f in (("c", changed), ("d", renamed), ("e", mode))]
    assert key not in others and len(set(others)) == 3
