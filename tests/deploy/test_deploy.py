"""Deploy floodguard with ansible/site.yml onto booted Debian 12 and 13 containers and check the
result.

The tests run in file order on one container per Debian release (module fixture, parametrized
below): ``--check`` on the new container and the first playbook run happen in the fixture; each
test then checks one promise of the deployment. What a release can break (installing, the units,
the rules, registering, banning, check mode, a second run) runs on both; the rest, which
exercises the role's handlers and floodguard itself rather than the release, runs on the first
release of ``SUITES`` only, and its last test reboots the container into a fresh network
namespace and checks that rules, bans and registrations come back.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from floodguard import daemon
from tests.svcrack_run import run_svcrack

from .conftest import ACCOUNTS, ASSETS, REPO, REQUIRED_TOOLS, SIP_PORT, SUITES, UNITS, Container

pytestmark = pytest.mark.root(*REQUIRED_TOOLS)

Test = TypeVar("Test", bound=Callable[..., None])
# The release the single-release tests run on: the first of SUITES, so that pytest, which groups
# the tests by the index of the container's parameter, keeps one container per release.
MAIN_SUITE = next(iter(SUITES))


def on_main_suite_only(test: Test) -> Test:
    """Run this test on MAIN_SUITE's container only."""
    test.suites = (MAIN_SUITE,)  # type: ignore[attr-defined]
    return test


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One container per Debian release: every test on each, unless it says otherwise."""
    if "container" in metafunc.fixturenames:
        suites = getattr(metafunc.function, "suites", tuple(SUITES))
        metafunc.parametrize("container", suites, indirect=True, scope="module")

PHONE_USER = "1001"
ATTACKED_USER = "1002"
# how often the guard checks (and repairs) the rules
RULES_CHECK_SECONDS = float(getattr(daemon, "RULES_CHECK_EVERY", 10.0))


def ban_entries(box: Container) -> dict[str, int]:
    """floodguard-ban members (IPv4) -> seconds left, read in the container's namespace."""
    text = box.netns_run(box.ns, "ipset", "list", "floodguard-ban").stdout
    members = text.split("Members:", 1)[1].split()
    return {members[i - 1]: int(members[i + 1])
            for i, token in enumerate(members) if token == "timeout"}


def ruleset(box: Container, backend: str = "nft") -> str:
    """iptables-save of both families and one backend, in the container's namespace."""
    return "".join(box.netns_run(box.ns, f"{tool}-{backend}-save", "-c").stdout
                   for tool in ("iptables", "ip6tables"))


def ban_drops(box: Container, backend: str = "nft") -> int:
    """Packets the raw-table ban rule dropped so far (IPv4)."""
    text = box.netns_run(box.ns, f"iptables-{backend}-save", "-c", "-t", "raw").stdout
    return sum(int(line[1:].split(":", 1)[0]) for line in text.splitlines()
               if "--match-set floodguard-ban src" in line and "DROP" in line)


PROBE = r"""
import socket, sys
src, dst, port, wait = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.settimeout(wait)
me = s.getsockname()[1]
lines = [f"REGISTER sip:{dst} SIP/2.0",
         f"Via: SIP/2.0/UDP {src}:{me};branch=z9hG4bK-probe{me};rport", "Max-Forwards: 70",
         f"From: <sip:probe@{dst}>;tag=probe{me}", f"To: <sip:probe@{dst}>",
         f"Call-ID: probe{me}@{src}", "CSeq: 1 REGISTER", f"Contact: <sip:probe@{src}:{me}>",
         "Expires: 60", "Content-Length: 0", "", ""]
s.sendto("\r\n".join(lines).encode(), (dst, port))
try:
    print(s.recv(65535).split(b"\r\n", 1)[0].decode())
except TimeoutError:
    print("no answer")
"""


def probe_register(box: Container, src: str, wait: float = 3.0) -> str:
    """Send one REGISTER from src in the client namespace: the status line, or 'no answer'."""
    return box.netns_run(box.client_ns, sys.executable, "-c", PROBE, src, box.sip_ip,
                         str(SIP_PORT), str(wait)).stdout.strip()


def sipp_register(box: Container, user: str, password: str, src: str, port: int,
                  timeout: int = 15) -> int:
    """One authenticated REGISTER with SIPp from src in the client namespace; returns the
    number of successful registrations (0 or 1)."""
    csv = box.work / f"users-{port}.csv"
    csv.write_text(f"SEQUENTIAL\n{user};[authentication username={user} "
                   f"password={password}]\n")
    stat = box.work / f"stat-{port}.csv"
    box.netns_run(box.client_ns, "sipp", f"{box.sip_ip}:{SIP_PORT}",
                  "-sf", str(ASSETS / "register.xml"), "-inf", str(csv), "-m", "1",
                  "-i", src, "-p", str(port), "-timeout", f"{timeout}s", "-timeout_error",
                  "-nostdin", "-trace_stat", "-stf", str(stat), "-recv_timeout", "4000",
                  check=False, timeout=60)
    lines = stat.read_text().splitlines() if stat.exists() else []
    if len(lines) < 2:
        return 0
    row = dict(zip(lines[0].split(";"), lines[-1].split(";"), strict=False))
    return int(row["SuccessfulCall(C)"])


def endpoints(box: Container) -> list[dict[str, object]]:
    """The deployed registrar's bindings, as `floodguard endpoints --json` prints them."""
    return json.loads(box.ssh("floodguard endpoints --json").stdout)


def guard_events(box: Container, since: str) -> list[dict[str, object]]:
    """The guard's JSON event lines in the journal since a `date` timestamp."""
    text = box.ssh(f"journalctl -u floodguard.service -o cat --no-pager --since '{since}'",
                   check=False).stdout
    events = []
    for line in text.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return [e for e in events if isinstance(e, dict)]


def main_pids(box: Container) -> dict[str, str]:
    """MainPID of the guard and the registrar."""
    return {unit: box.ssh(f"systemctl show -p MainPID --value {unit}").stdout.strip()
            for unit in ("floodguard.service", "floodguard-registrar.service")}


def test_first_run_deploys(container: Container) -> None:
    """The first playbook run installs and changes things, and fails nothing."""
    run = container.first_run
    assert run is not None
    assert run.recap.get("failed") == 0 and run.recap.get("unreachable") == 0, run.output[-4000:]
    assert run.recap.get("changed", 0) > 0
    # the role installed offline, from the wheelhouse it built on the controller
    wheels = container.ssh("ls /var/cache/floodguard/wheelhouse").stdout.split()
    # floodguard's wheel carries its compiled per-packet path (queue binding, SIP scan)
    assert any(w.startswith("floodguard-") and w.endswith("linux_x86_64.whl")
               for w in wheels), wheels
    container.ssh("/opt/floodguard/bin/python -c "
                  "'import floodguard.kernel._nfq, floodguard.sip._scan'")
    config = container.ssh("stat -c '%a %U' /etc/floodguard/floodguard.toml "
                           "/etc/floodguard/accounts.toml").stdout.split("\n")
    assert config[1].split() == ["600", "root"], config
    # the config holds the Redis password (fleet.redis_url); the example beside it holds none
    assert config[0].split() == ["600", "root"], config
    container.ssh("floodguard config check -c /etc/floodguard/floodguard.toml")
    example = container.ssh("cat /etc/floodguard/floodguard.toml.example").stdout
    assert example == (REPO / "examples" / "floodguard.toml").read_text()
    python = container.ssh("/opt/floodguard/bin/python -c 'import sys; print(sys.version)'")
    assert python.stdout.startswith(SUITES[container.suite] + "."), python.stdout


def test_check_mode_on_a_new_host(container: Container) -> None:
    """``ansible-playbook --check`` on the new container (before the first run) fails nothing,
    reports what it would change and changes nothing."""
    run = container.fresh_check_run
    assert run is not None
    assert run.returncode == 0 and run.recap.get("failed") == 0, run.output[-6000:]
    changed = run.changed_tasks()
    assert "floodguard : Install floodguard into its venv" in changed, changed
    assert "floodguard : Write the floodguard config" in changed, changed
    # the first run (in the fixture) still had everything to do
    assert container.first_run is not None
    assert "floodguard : Install floodguard into its venv" in container.first_run.changed_tasks()


def test_units_verify_and_are_active(container: Container) -> None:
    """The shipped units pass systemd-analyze verify where they run, and are enabled, active and
    hardened."""
    paths = " ".join(f"/usr/local/lib/systemd/system/{unit}" for unit in UNITS)
    verify = container.ssh(f"systemd-analyze verify {paths}", check=False)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    for unit in UNITS:
        assert container.ssh(f"systemctl is-enabled {unit}").stdout.strip() == "enabled"
        active = container.ssh(f"systemctl is-active {unit}", check=False).stdout.strip()
        assert active == "active", (unit, container.ssh(
            f"systemctl status --no-pager -n 30 {unit}", check=False).stdout)
    shown = container.ssh("systemctl show -p CapabilityBoundingSet -p ProtectSystem "
                          "-p NoNewPrivileges floodguard.service").stdout
    assert "cap_net_admin" in shown and "cap_sys_admin" not in shown, shown
    assert "ProtectSystem=strict" in shown and "NoNewPrivileges=yes" in shown, shown
    order = container.ssh("systemctl show -p Before -p Wants floodguard-rules.service").stdout
    assert order.count("network-pre.target") == 2, order
    registrar = container.ssh("systemctl show -p CapabilityBoundingSet "
                              "floodguard-registrar.service").stdout
    assert "cap_net_bind_service" in registrar and "cap_net_admin" not in registrar, registrar


def test_rules_and_sets_in_the_container_namespace(container: Container) -> None:
    """The rules and ipsets are in the container's own network namespace (nft backend)."""
    rules = ruleset(container)
    for chain in (":FLOODGUARD-RAW", ":FLOODGUARD ", ":FLOODGUARD-OUT"):
        assert chain in rules, rules
    assert "-A PREROUTING -j FLOODGUARD-RAW" in rules
    assert "NFQUEUE" in rules and "--queue-bypass" in rules
    assert "friendly-scanner" not in rules  # the test inventory turned the scanner layer off
    sets = container.netns_run(container.ns, "ipset", "list", "-n").stdout.split()
    assert {"floodguard-ban", "floodguard-ban-net6", "floodguard-allow"} <= set(sets), sets
    shown = json.loads(container.ssh("floodguard show --json").stdout)
    assert shown["installed"] is True


def test_register_is_answered_by_the_deployed_registrar(container: Container) -> None:
    """A REGISTER from the client namespace is challenged; a phone (SIPp) registers (401, then
    200) and its binding is listed by `floodguard endpoints`."""
    assert probe_register(container, container.phone_ip).startswith("SIP/2.0 401")
    assert sipp_register(container, PHONE_USER, ACCOUNTS[PHONE_USER], container.phone_ip,
                         5071) == 1

    def listed(bindings: list[dict[str, object]]) -> bool:
        return any(str(b.get("aor")).startswith(f"{PHONE_USER}@")
                   and f":{container.phone_ip}:" in str(b.get("source")) for b in bindings)

    # the registrar writes its bindings to the store every 100 ms, later while the guard (just
    # started) holds the database: the phone's may come a moment after its 200 OK
    deadline = time.monotonic() + 5
    bindings = endpoints(container)
    while not listed(bindings) and time.monotonic() < deadline:
        time.sleep(0.2)
        bindings = endpoints(container)
    assert listed(bindings), bindings


def test_bruteforce_source_is_banned_by_the_deployed_guard(container: Container) -> None:
    """svcrack guessing an account's password from the attacker address ends in the kernel ban
    set; the phone keeps registering."""
    # once banned nothing answers: svcrack gives up after 2 s of silence
    run_svcrack(["ip", "netns", "exec", container.client_ns],
                ["-u", ATTACKED_USER, "-r", "1-40", "-p", str(SIP_PORT), "-t", "0.2",
                 "--maximumtime", "2", container.sip_ip], timeout=60)
    deadline = time.monotonic() + 20
    while container.attacker_ip not in ban_entries(container) and time.monotonic() < deadline:
        time.sleep(0.5)
    bans = ban_entries(container)
    assert container.attacker_ip in bans, (bans, container.ssh(
        "journalctl -u floodguard --no-pager -n 40", check=False).stdout)
    assert container.phone_ip not in bans
    assert probe_register(container, container.attacker_ip) == "no answer"
    explain = container.ssh(f"floodguard blacklist explain {container.attacker_ip}").stdout
    assert container.attacker_ip in explain
    assert sipp_register(container, PHONE_USER, ACCOUNTS[PHONE_USER], container.phone_ip,
                         5072) == 1


def test_second_run_changes_nothing(container: Container) -> None:
    """The playbook is idempotent: a second run reports changed=0."""
    run = container.playbook()
    assert run.recap.get("changed") == 0, run.changed_tasks()
    assert run.recap.get("failed") == 0
    # meanwhile the guard's rule keeper found the rules in place (nft) and could check them
    events = guard_events(container, "2000-01-01 00:00:00")
    assert not [e for e in events if e.get("event") == "rules_repair_failed"], events


def test_check_mode_on_a_deployed_host_changes_nothing(container: Container) -> None:
    """``--check`` with a changed limit on the deployed container fails nothing and predicts the
    config change and its reloads, while the config, the rules and the processes stay as
    they are."""
    config = container.ssh("sha256sum /etc/floodguard/floodguard.toml").stdout
    before = main_pids(container)
    run = container.playbook("--check", extra={"floodguard_limits_register_burst": 13},
                             check=False)
    assert run.returncode == 0 and run.recap.get("failed") == 0, run.output[-6000:]
    changed = run.changed_tasks()
    assert "floodguard : Write the floodguard config" in changed, changed
    assert "floodguard : Reload floodguard rules" in changed, changed
    assert container.ssh("sha256sum /etc/floodguard/floodguard.toml").stdout == config
    assert "--hashlimit-burst 13" not in ruleset(container)
    assert main_pids(container) == before


def test_the_legacy_restore_text_loads_with_this_release_s_iptables(container: Container
                                                                    ) -> None:
    """The legacy backend feeds iptables-legacy-restore the restore text the nft backend uses
    (python-iptables, its former reader, broke on Debian 13's iptables 1.8.11). The release's
    own iptables-legacy-restore loads it: a real apply with the deployed floodguard, in a fresh
    network namespace inside the container, so the deployed rules stay as they are."""
    script = ("set -e; ip link set lo up; d=$(mktemp -d); "
              "printf '[state]\\npath = \"%s/state.db\"\\n' \"$d\" > \"$d/fg.toml\"; "
              "floodguard apply -c \"$d/fg.toml\" --backend legacy >&2; "
              "echo '== legacy'; iptables-legacy-save; ip6tables-legacy-save; "
              "echo '== nft'; iptables-nft-save; ip6tables-nft-save; echo '== sets'; "
              "ipset list -n; rm -rf \"$d\"")
    out = container.ssh(f"unshare --net sh -c {shlex.quote(script)}").stdout
    legacy, rest = out.split("== legacy\n", 1)[1].split("== nft\n", 1)
    nft, sets = rest.split("== sets\n", 1)
    assert legacy.count("-A PREROUTING -j FLOODGUARD-RAW") == 2, legacy  # IPv4 and IPv6
    assert "--hashlimit-name" in legacy and "-j NFQUEUE" in legacy, legacy
    assert "FLOODGUARD" not in nft, nft
    assert {"floodguard-ban", "floodguard-ban-net6"} <= set(sets.split()), sets
    assert ":FLOODGUARD-RAW" not in ruleset(container, "legacy")  # the deployed host untouched
    assert ":FLOODGUARD-RAW" in ruleset(container, "nft")


@on_main_suite_only
def test_a_changed_package_byte_is_built_not_served_from_the_cache(container: Container,
                                                                  tmp_path: Path) -> None:
    """The wheelhouse is kept between runs (wheelcache.py) and the role reuses its wheels while
    its key over the build inputs matches. A copy of the checkout that differs in one byte of the
    package must be built, never served the cached wheel: here the byte is a syntax error in a
    compiled module, so ``--check`` (which builds) fails in the build task within seconds."""
    assert container.wheelhouse is not None
    cached = sorted(container.wheelhouse.glob("floodguard-*.whl"))
    assert cached, f"the fixture's runs left no wheel in {container.wheelhouse}"
    source, wheelhouse = tmp_path / "src", tmp_path / "wheelhouse"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*cache", "*.so"))
    shutil.copytree(container.wheelhouse, wheelhouse)
    guard = source / "floodguard" / "guard.py"
    guard.write_text(guard.read_text() + "\ndef broken_by_the_cache_test(:\n")
    run = container.playbook("--check", check=False, extra={
        "floodguard_source": str(source), "floodguard_wheelhouse": str(wheelhouse)})
    assert run.returncode != 0 and run.recap.get("failed") == 1, run.output[-4000:]
    failed = run.output.split("fatal:", 1)[0].rsplit("TASK [", 1)[1].split("]", 1)[0]
    assert failed == "floodguard : Build the wheels on the controller", run.output[-4000:]
    assert "guard.py" in run.output, run.output[-4000:]
    assert sorted(container.wheelhouse.glob("floodguard-*.whl")) == cached


@on_main_suite_only
def test_config_change_reloads_without_restart(container: Container) -> None:
    """A changed limit is applied by the handlers with reloads (SIGHUP, a fresh atomic apply):
    the guard and the registrar keep their process."""
    before = main_pids(container)
    run = container.playbook(extra={"floodguard_limits_register_burst": 12})
    assert run.recap.get("changed", 0) > 0
    changed = run.changed_tasks()
    assert "floodguard : Reload floodguard rules" in changed, changed
    assert "floodguard : Reload floodguard guard" in changed, changed
    assert not any("Restart" in name for name in changed), changed
    assert main_pids(container) == before
    assert "--hashlimit-burst 12" in ruleset(container)


# Debian 12 only, for time: the role's switch and the keeper's repair are the release's business
# no more than any other handler's. (Before the legacy backend fed iptables-legacy-restore the
# restore text, python-iptables failed on Debian 13's iptables 1.8.11: "b'hashlimit': no such
# parameter"; test_the_legacy_restore_text_loads_with_this_release_s_iptables loads it there.)
@on_main_suite_only
def test_switch_to_the_legacy_backend(container: Container) -> None:
    """floodguard_iptables_backend=legacy moves the rules from nf_tables to the legacy tables
    (never both), and the ban stays in the kernel."""
    since = container.ssh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
    run = container.playbook(extra={"floodguard_iptables_backend": "legacy"})
    assert "floodguard : Restart floodguard rules" in run.changed_tasks()
    legacy, nft = ruleset(container, "legacy"), ruleset(container, "nft")
    assert ":FLOODGUARD-RAW" in legacy and "-A PREROUTING -j FLOODGUARD-RAW" in legacy, legacy
    assert "--hashlimit-burst 12" not in legacy  # the inventory's own settings again
    assert "FLOODGUARD" not in nft, nft
    for unit in UNITS:
        assert container.ssh(f"systemctl is-active {unit}", check=False).stdout.strip() \
            == "active"
    assert container.attacker_ip in ban_entries(container)
    assert container.ssh("cat /etc/default/floodguard").stdout.count("FLOODGUARD_BACKEND=legacy")
    # the guard's rule keeper repairs the legacy tables too (it takes the xtables lock, which
    # the hardened unit must let it write): take our jump out and watch it come back
    container.netns_run(container.ns, "iptables-legacy", "-t", "raw", "-D", "PREROUTING",
                        "-j", "FLOODGUARD-RAW")
    deadline = time.monotonic() + RULES_CHECK_SECONDS + 5
    while time.monotonic() < deadline:
        events = guard_events(container, since)
        if any(e.get("event") in ("rules_repaired", "rules_repair_failed") for e in events):
            break
        time.sleep(0.5)
    # (an admission change in between is a "rules_updated", not a repair)
    assert [e["event"] for e in events if str(e.get("event")).startswith("rules_repair")] \
        == ["rules_repaired"], events
    assert "-A PREROUTING -j FLOODGUARD-RAW" in ruleset(container, "legacy")


@on_main_suite_only
def test_invalid_variable_is_rejected_before_any_change(container: Container) -> None:
    """meta/argument_specs.yml rejects a bad value before the role touches the host."""
    run = container.playbook(extra={"floodguard_sip_mode": "sideways",
                                    "floodguard_iptables_backend": "legacy"}, check=False)
    assert run.returncode != 0
    assert "floodguard_sip_mode" in run.output and "sideways" in run.output
    assert run.recap.get("changed") == 0, run.changed_tasks()


@on_main_suite_only
def test_reboot_brings_back_rules_bans_and_registrations(container: Container) -> None:
    """`systemctl reboot` in the container: shutdown removes the rules (ExecStop); the next boot,
    in a fresh network namespace, applies them again (with the legacy backend the previous test
    chose) and restores bans and registrations."""
    assert container.attacker_ip in ban_entries(container), "no ban to survive the reboot"
    assert any(str(b.get("aor")).startswith(f"{PHONE_USER}@") for b in endpoints(container))
    code = container.reboot()
    assert code == 133, f"systemd-nspawn exit {code} (133 = reboot requested)"
    # ExecStop=floodguard remove ran at shutdown: nothing of ours is left in the namespace
    for backend in ("legacy", "nft"):
        leftover = ruleset(container, backend)
        assert "FLOODGUARD" not in leftover, leftover
    assert "floodguard-" not in container.netns_run(container.ns, "ipset", "list", "-n").stdout
    container.unwire()
    container.wire()
    container.boot()
    for unit in UNITS:
        assert container.ssh(f"systemctl is-active {unit}", check=False).stdout.strip() \
            == "active", container.ssh(f"systemctl status --no-pager {unit}", check=False).stdout
    assert ":FLOODGUARD-RAW" in ruleset(container, "legacy")
    assert "FLOODGUARD" not in ruleset(container, "nft")
    bans = ban_entries(container)
    assert container.attacker_ip in bans and bans[container.attacker_ip] > 0, bans
    bindings = endpoints(container)
    assert any(str(b.get("aor")).startswith(f"{PHONE_USER}@") for b in bindings), bindings
    # the restored ban holds in the kernel: the attacker's REGISTER is dropped, the phone's not
    drops = ban_drops(container, "legacy")
    assert probe_register(container, container.attacker_ip) == "no answer"
    assert ban_drops(container, "legacy") > drops
    assert probe_register(container, container.phone_ip).startswith("SIP/2.0 401")
    assert sipp_register(container, PHONE_USER, ACCOUNTS[PHONE_USER], container.phone_ip,
                         5074) == 1


# A stand-in for Debian's nftables.service (the image has no nftables package): a reload that
# flushes like `nft -f /etc/nftables.conf` does, here the raw table of both backends.
NFTABLES_STAND_IN = """[Unit]
Description=stand-in for nftables.service: its reload flushes the raw tables
DefaultDependencies=no
Before=network-pre.target
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
ExecReload=/bin/sh -c 'for t in iptables-legacy ip6tables-legacy iptables-nft ip6tables-nft; \
do $$t -t raw -F; $$t -t raw -X; done'
"""


def test_host_firewall_reload_reapplies_the_rules(container: Container) -> None:
    """systemd propagates a reload of the host's firewall to floodguard-rules
    (ReloadPropagatedFrom=): with the guard (and its rule keeper) stopped, the flushed rules are
    back right after `systemctl reload nftables`, bans included."""
    def both() -> str:  # whichever backend the tests before chose
        return ruleset(container, "legacy") + ruleset(container, "nft")

    assert "-A PREROUTING -j FLOODGUARD-RAW" in both()
    container.ssh("systemctl stop floodguard.service")
    try:
        container.ssh("cat > /run/systemd/system/nftables.service <<'EOF'\n"
                      f"{NFTABLES_STAND_IN}EOF\n"
                      "systemctl daemon-reload && systemctl start nftables.service")
        since = container.ssh("date '+%Y-%m-%d %H:%M:%S'").stdout.strip()
        time.sleep(1)
        container.ssh("systemctl reload nftables.service")
        deadline = time.monotonic() + 10
        while "-A PREROUTING -j FLOODGUARD-RAW" not in both() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "-A PREROUTING -j FLOODGUARD-RAW" in both()
        journal = container.ssh(f"journalctl -u floodguard-rules.service -o cat --no-pager "
                                f"--since '{since}'").stdout
        assert "floodguard: applied" in journal, journal
        assert container.attacker_ip in ban_entries(container)
    finally:
        container.ssh("systemctl stop nftables.service; rm -f /run/systemd/system/nftables.service;"
                      " systemctl daemon-reload; systemctl start floodguard.service")
