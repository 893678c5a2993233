"""The lab's scenarios in one registry: one frozen ``Scenario`` record per attack.

Each record says what the attack is (``description``, shown by the table and the HTML report),
how its attackers are started (``generators``: floodguard's own generators in ``attacks.py``
and ``botnet.py``; ``tools``: SIPVicious where installed), what the phones do meanwhile
(``storm``: registered phones reboot at once; ``fresh``: phones nobody has seen yet register at
once, and the run lasts until all of them are registered or give up), whose binding
is watched (``victim``), whose registrations are reported on their own (``owner``), whether the
office behind its NAT takes part (``office``), and what the report says about the attacker's
gain (``detail``: one row or several).
``runner.py``, ``attacks.py``, ``report.py`` and ``command.py`` all read ``SCENARIOS``; none of
them keeps its own list.

``attacks.py`` imports this module when it runs as ``python -m floodguard.lab.attacks``, so
this module does not import ``attacks`` at load time (only ``sip`` and ``settings``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from floodguard.lab import sip
from floodguard.lab.settings import LabSettings, stale_index

# A scenario's own rows in the report: (label, value), a list of them, or None; a value that
# is not a str is a number (or None) the report formats.
Row = tuple[str, Any]
Detail = Callable[[Mapping[str, Any]], Row | list[Row] | None]


@dataclass(frozen=True)
class Generator:
    """One of ``attacks.py``'s generators, started in the attackers' namespace as
    ``python -m floodguard.lab.attacks ATTACK --server IP --duration S --users N ...``.

    ``process`` names the process: its log is ``attack-<process>.log`` and its JSON summary is
    ``result["attack"][process]``. ``attack`` is the generator (``attacks.py``'s function of
    that name, ``-`` written ``_``). ``rate`` is packets (or guesses) per second, or the name of
    the ``LabSettings`` field holding it. ``sources`` is (first, count) of the attackers' real
    addresses; None: spoofed, ``--botnet-sources`` of them. ``where`` is the namespace it runs
    in: ``attackers``, or ``office`` (behind the office's NAT: ``sources`` then index the
    office's other hosts). ``target`` is the index of the phone whose account is attacked, or a
    function of the settings giving it."""

    process: str
    attack: str
    rate: float | str
    sources: tuple[int, int] | None = (0, 1)
    target: int | Callable[[LabSettings], int] | None = None
    where: str = "attackers"


@dataclass(frozen=True)
class Tool:
    """A SIPVicious tool, run only where installed (and ``LabSettings.sipvicious``) as
    ``timeout -s INT S TOOL [-u USER -d WORDS] -p 5060 -x ATTACKER_IP ARGS... SERVER``.

    ``target`` (with ``words``): crack that phone's account with a word list of ``words``
    guesses that holds its password (``attacks.guesses``)."""

    name: str
    args: tuple[str, ...] = ()
    target: int | None = None
    words: int = 0


@dataclass(frozen=True)
class Scenario:
    """One attack of the lab, everything every part of the lab needs to know about it."""

    name: str
    description: str
    generators: tuple[Generator, ...] = ()
    tools: tuple[Tool, ...] = ()
    storm: bool = False  # the storm phones re-register at once early in the attack window
    fresh: bool = False  # phones the guard never saw register at once early in the window
    victim: int | None = None  # index of the phone whose binding is watched during the run
    owner: int | None = None  # index of the phone whose registrations are reported apart
    office: bool = False  # the office's phones register from behind its NAT meanwhile
    detail: Detail | None = None

    def commands(self, launch: Launch) -> list[tuple[str, list[str]]]:
        """The attack processes: (name, argv) to run in the attackers' namespace."""
        out = [(g.process, launch.generator_argv(g)) for g in self.generators]
        if launch.sipvicious:
            out += [(t.name, launch.tool_argv(t)) for t in self.tools]
        return out


@dataclass(frozen=True)
class Launch:
    """What turns a scenario's records into command lines in one run."""

    python: str
    server: str
    attackers: Sequence[str]  # the attackers' real addresses
    office_hosts: Sequence[str]  # the office's other hosts (private, behind its NAT)
    tool_source: str  # the address the SIPVicious tools bind to
    duration: float  # the longest an attack runs
    users: int  # lab accounts that exist
    botnet_sources: int
    settings: LabSettings  # where a generator's rate given by name comes from
    run_dir: Path  # where word lists go
    sipvicious: bool  # the SIPVicious tools run

    def generator_argv(self, g: Generator) -> list[str]:
        argv = [self.python, "-m", "floodguard.lab.attacks", g.attack, "--server", self.server,
                "--duration", str(self.duration), "--users", str(self.users)]
        if g.sources is None:
            argv += ["--botnet-sources", str(self.botnet_sources)]
        else:
            first, count = g.sources
            hosts = self.office_hosts if g.where == "office" else self.attackers
            if len(hosts) < first + count:
                raise ValueError(f"{g.process} needs {first + count} addresses in the {g.where} "
                                 f"namespace, the lab has {len(hosts)}")
            for ip in hosts[first:first + count]:
                argv += ["--source", ip]
        rate = getattr(self.settings, g.rate) if isinstance(g.rate, str) else g.rate
        argv += ["--rate", str(rate)]
        if g.target is not None:
            index = g.target(self.settings) if callable(g.target) else g.target
            argv += ["--target", sip.phone_user(index)]
        return argv

    def tool_argv(self, t: Tool) -> list[str]:
        argv = ["timeout", "-s", "INT", str(max(1, int(self.duration))), t.name]
        if t.target is not None:
            from floodguard.lab.attacks import guesses

            user = sip.phone_user(t.target)
            words = self.run_dir / f"{t.name}-words.txt"
            words.write_text("\n".join(guesses(user, t.words)) + "\n")
            argv += ["-u", user, "-d", str(words)]
        return [*argv, "-p", str(sip.SIP_PORT), "-x", self.tool_source, *t.args, self.server]


# ---------------------------------------------------------------------------- report details


def _bruteforce_detail(r: Mapping[str, Any]) -> tuple[str, Any]:
    attack = r.get("attack") or {}
    guesser = attack.get("guesser") or {}
    svcrack = str((attack.get("svcrack") or {}).get("output", ""))
    cracked = bool(guesser.get("cracked")) or "| Password" in svcrack and " | lab" in svcrack
    blocked = guesser.get("blocked_after_failures")
    text = "CRACKED" if cracked else "not cracked"
    if blocked is not None:
        text += f", silenced after {blocked} proven failures"
    return ("password", text)


def _hijack_detail(r: Mapping[str, Any]) -> tuple[str, Any]:
    changed = r.get("victim_binding_changed")
    return ("victim binding changed", "-" if changed is None else ("YES" if changed else "no"))


def _scanner_detail(r: Mapping[str, Any]) -> tuple[str, Any]:
    found = ((r.get("attack") or {}).get("scanner") or {}).get("extensions_answered")
    return ("extensions answered to scanner", found)


def _botnet_detail(r: Mapping[str, Any]) -> tuple[str, Any] | None:
    bot = (r.get("attack") or {}).get("botnet") or {}
    if not bot.get("sources"):
        return None
    return ("spoofed sources x rate/source",
            f"{int(bot['sources']):,} x {bot.get('per_source_rate', 0):.2f}/s")


def _fresh_detail(r: Mapping[str, Any]) -> tuple[str, Any] | None:
    fresh = r.get("fresh_start")
    if not fresh:
        return None
    done = fresh.get("completed_s")
    return ("fresh phones registered",
            f"{fresh.get('registered', 0):,}/{fresh.get('phones', 0):,} "
            + (f"all within {done:.1f} s" if done is not None
               else f"(gave up after {fresh.get('gave_up_s', 0):.0f} s)"))


def _nat_office_detail(r: Mapping[str, Any]) -> list[Row]:
    attack = r.get("attack") or {}
    office = r.get("office") or {}
    stale, guesser = attack.get("stale-phone") or {}, attack.get("spray") or {}
    held = r.get("holds") or {}
    pct = office.get("success_pct")
    return [
        ("office phones ok/attempted",
         f"{office.get('succeeded', 0):,}/{office.get('attempted', 0):,}"
         + ("" if pct is None else f" ({pct:.2f}%)")),
        ("stale phone: wrong-password answers", stale.get("wrong_answers")),
        ("guesser: answers / accepted",
         f"{guesser.get('answered', 0):,} / {guesser.get('accepted', 0):,}"
         + (" CRACKED" if guesser.get("cracked") else "")),
        ("office address locked down / endpoints suspended",
         f"{'yes' if held.get('lockdowns') else 'no'} / {len(held.get('suspended_pairs', []))}"),
    ]


def _distributed_detail(r: Mapping[str, Any]) -> list[Row]:
    guessers = (r.get("attack") or {}).get("guessers") or {}
    owner = r.get("owner") or {}
    held = r.get("holds") or {}
    after = held.get("answered_after_protection")
    return [
        ("owner's registrations ok/attempted",
         f"{owner.get('succeeded', 0):,}/{owner.get('attempted', 0):,}"),
        ("guesses answered/sent", f"{guessers.get('guesses_answered', 0):,}/"
                                  f"{guessers.get('guesses', 0):,}"),
        ("account protected after s / guesses answered since",
         "no" if held.get("protected_at_s") is None
         else f"{held['protected_at_s']:.2f} / {after}"),
    ]


# ---------------------------------------------------------------------------- the registry

# The spoofed botnet's variants: (scenario, generator, what each packet is). Every one sends
# from --botnet-sources spoofed addresses at --botnet-rate in all, each source under the
# per-source limits; the process is always called "botnet".
BOTNET_VARIANTS = (
    ("botnet", "botnet", "REGISTERs with bogus credentials"),
    ("botnet-noauth", "botnet-noauth", "REGISTERs without credentials"),
    ("botnet-options", "botnet-options", "OPTIONS requests"),
    ("botnet-junk", "botnet-junk", "random bytes that are not SIP"),
)

# The fresh start (phones the guard never saw register at once) under a botnet variant.
FRESH_VARIANTS = (
    ("fresh-start", "botnet", "2,000 phones the guard has never seen register at the same "
     "instant (a fresh start) while the botnet (bogus credentials) runs; each retries until it "
     "is registered"),
    ("fresh-start-forged", "botnet-token", "the fresh start while the botnet forges the guard's "
     "public token prefix (fg1.) in half of its bogus credentials, to crowd out the new phones' "
     "answers to their challenges as well as their first REGISTERs"),
)

VICTIM = 1  # the phone whose AOR the hijacker goes after
OWNER = 3  # the phone whose account the distributed guessers go after
DISTRIBUTED_SOURCES = 100
_SCENARIOS = (
    Scenario(
        "volume", "one source sending REGISTERs as fast as it can",
        generators=(Generator("volume", "volume", "volume_rate"),)),
    *(Scenario(
        name, f"{what} from thousands of spoofed sources, each under the per-source limits",
        generators=(Generator("botnet", attack, "botnet_rate", sources=None),),
        detail=_botnet_detail) for name, attack, what in BOTNET_VARIANTS),
    Scenario(
        "bruteforce", "challenge-response password guessing from a real address (ordinary "
        "user agent), plus SIPVicious svcrack",
        generators=(Generator("guesser", "bruteforce", 5, target=0),),
        tools=(Tool("svcrack", ("-t", "0.1"), target=0, words=60),),
        detail=_bruteforce_detail),
    Scenario(
        "scanner", "svmap/svwar-style discovery with scanner user agents (and SIPVicious "
        "itself)",
        generators=(Generator("scanner", "scanner", 200, sources=(1, 4)),),
        tools=(Tool("svmap"),
               Tool("svwar", ("-m", "REGISTER", "--force",
                              "-e", f"{sip.FIRST_USER}-{sip.FIRST_USER + 200}", "-t", "0.05"))),
        detail=_scanner_detail),
    Scenario(
        "contact-abuse", "REGISTERs with huge, numerous and malformed Contact headers",
        generators=(Generator("contact-abuse", "contact-abuse", 400, sources=(5, 8)),)),
    Scenario(
        "hijack", "REGISTERs for a victim's AOR pointing at the attacker (wrong password, "
        "forged nonce, own credentials, Contact: *)",
        generators=(Generator("hijack", "hijack", 4, sources=(2, 1), target=VICTIM),),
        victim=VICTIM, detail=_hijack_detail),
    Scenario(
        "storm", "500 phones re-registering at the same instant after an outage", storm=True),
    *(Scenario(name, what, generators=(Generator("botnet", attack, "botnet_rate",
                                                 sources=None),),
               fresh=True, detail=_fresh_detail) for name, attack, what in FRESH_VARIANTS),
    Scenario(
        "nat-office", "an office behind one NAT address: 30 phones registering, a desk phone "
        "with an old password retrying every 5 s, and a password guesser spraying 100 "
        "accounts at 2 guesses/s",
        generators=(
            Generator("stale-phone", "stale-phone", 0.2, where="office",
                      target=stale_index),
            Generator("spray", "spray", 2, sources=(1, 1), where="office")),
        office=True, detail=_nat_office_detail),
    Scenario(
        "distributed-guess", f"{DISTRIBUTED_SOURCES} addresses guessing one account's password, "
        "each once every 10 s, while its owner keeps registering",
        generators=(Generator("guessers", "distributed-guess", DISTRIBUTED_SOURCES / 10,
                              sources=(16, DISTRIBUTED_SOURCES), target=OWNER),),
        owner=OWNER, detail=_distributed_detail),
)
SCENARIOS: Mapping[str, Scenario] = MappingProxyType({s.name: s for s in _SCENARIOS})
NAMES: tuple[str, ...] = tuple(SCENARIOS)


def get(name: str) -> Scenario:
    """The scenario called ``name``; ValueError for a name the registry does not hold."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ValueError(f"unknown scenario {name!r}") from None


def generator_names() -> list[str]:
    """Every generator some scenario starts, each once, in registry order."""
    return list(dict.fromkeys(g.attack for s in _SCENARIOS for g in s.generators))
