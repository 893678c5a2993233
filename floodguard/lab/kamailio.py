"""Kamailio as the registrar under test: its configuration (digest auth for the lab's
accounts, in-memory location table, a binrpc control socket), its command line, its processes
and its bindings as ``kamcmd`` reports them.

The Debian package's modules are used; nothing is installed or written outside the run's
directory.
"""

from __future__ import annotations

from pathlib import Path

from floodguard.lab import sip
from floodguard.lab.procs import comm
from floodguard.lab.topology import Topology

KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"


def kamailio_config(users: list[str], ctl_socket: Path) -> str:
    """A Kamailio registrar with digest auth for the lab's accounts (and the attacker's own)."""
    first, last = int(users[0]), int(users[-1])
    return f"""#!KAMAILIO
debug=1
max_while_loops={last - first + 100}
log_stderror=yes
fork=yes
children=2
auto_aliases=no
mpath="{KAMAILIO_MODULES}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "htable.so"
loadmodule "ctl.so"
loadmodule "kex.so"
modparam("ctl", "binrpc", "unix:{ctl_socket}")
modparam("htable", "htable", "users=>size=12;")
modparam("auth", "nonce_expire", 300)
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)
event_route[htable:mod-init] {{
    $var(i) = {first};
    while ($var(i) <= {last}) {{
        $sht(users=>$var(i)) = "lab" + $var(i) + "pw";
        $var(i) = $var(i) + 1;
    }}
    $sht(users=>{sip.ATTACKER_USER}) = "{sip.ATTACKER_PASSWORD}";
}}
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (is_method("REGISTER")) {{
        if ($sht(users=>$tU) == $null) {{
            $var(pw) = "x-no-such-user-" + $Ts;
        }} else {{
            $var(pw) = $sht(users=>$tU);
        }}
        if (!pv_auth_check("$td", "$var(pw)", "0", "1")) {{
            auth_challenge("$td", "1");
            exit;
        }}
        if (!save("location")) {{ sl_reply_error(); }}
        exit;
    }}
    if (is_method("OPTIONS")) {{ sl_send_reply("200", "OK"); exit; }}
    sl_send_reply("405", "Method Not Allowed");
}}
"""


def kamailio_argv(cfg: Path, workdir: Path, listen: str) -> list[str]:
    """Kamailio in the foreground, logging to stderr, listening on UDP and TCP ``listen``."""
    argv = ["kamailio", "-f", str(cfg), "-DD", "-E", "-w", str(workdir)]
    for spec in (f"udp:{listen}", f"tcp:{listen}"):
        argv += ["-l", spec]
    return argv


def kamailio_pids(topology: Topology) -> list[int]:
    """Every Kamailio process in the registrar's namespace (it forks its workers)."""
    return [pid for pid in topology.pids_in(topology.registrar_ns) if comm(pid) == "kamailio"]


def kamailio_contacts(topology: Topology, ctl_socket: Path, user: str) -> set[str] | None:
    """The contacts bound to ``user``'s AOR now, from ``ul.lookup`` (None: cannot tell)."""
    result = topology.run_in(
        topology.registrar_ns,
        ["kamcmd", "-s", f"unix:{ctl_socket}", "ul.lookup", "location", f"s:{user}"],
        check=False, timeout=10)
    text = result.stdout + result.stderr
    if "404" in text or "not found" in text.lower():
        return set()
    if result.returncode != 0 or "error:" in text:
        return None
    return {line.split(":", 1)[1].strip() for line in result.stdout.splitlines()
            if line.strip().startswith("Address:")}
