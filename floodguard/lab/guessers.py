"""The generators of the precision scenarios (run through ``python -m floodguard.lab.attacks
NAME``), each a real SIP client that plays by the rules, so every wrong password it sends is a
*proven* failure:

- ``stale-phone`` (``nat-office``): a desk phone behind the office's NAT still holding an old
  password. Every ``1/--rate`` seconds (5 s) it tries to register: it answers the latest
  challenge it holds with the old password (asking for one first when it holds none, as after
  a silence), and keeps the fresh challenge a 401 carries for its next try.
- ``spray`` (``nat-office``): a password guesser on another host behind the same NAT, ``--rate``
  guesses per second (2) over ``SPRAY_AORS`` (100) accounts of the lab, one after the other:
  each guess asks for a challenge and answers it with a common password; guess number
  ``SPRAY_CRACK_AT`` holds its account's real password, so an unprotected registrar accepts it.
- ``distributed-guess``: every ``--source`` (100) guesses ``--target``'s password once every
  ``sources / --rate`` seconds (10 s), staggered so the account gets ``--rate`` (10) guesses per
  second in all.

Each prints its log of guesses, ``[wall-clock time of the answer, status or None]`` (None: no
answer: dropped), beside its counts; ``answered`` counts every answer, challenges included.
"""

from __future__ import annotations

import argparse
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from floodguard.lab import sip
from floodguard.lab.dialog import COMMON_PASSWORDS, Dialog, authorization
from floodguard.lab.pacing import STOP
from floodguard.sip import build
from floodguard.sip.message import SipMessage

SPRAY_AORS = 100
# the first guess after the lockdown (5 AORs) when protected; at 2 guesses/s it comes 2.5 s
# into the run, well inside the e2e tests' 4 s runs (guess 8 came at their very end)
SPRAY_CRACK_AT = 6
WRONG = (401, 403)  # the answers to a wrong password
Log = list[list[float | int | None]]


class Registration:
    """One account's REGISTER dialog over a ``Dialog``: a Call-ID, its CSeq and the latest
    challenge received."""

    def __init__(self, dialog: Dialog, server: str, user: str) -> None:
        self.dialog, self.server, self.user = dialog, server, user
        self.local = f"{dialog.src}:{dialog.sport}"
        self.call_id = f"{secrets.token_hex(8)}@{dialog.src}"
        self.cseq = 0
        self.challenge: SipMessage | None = None

    def send(self, password: str | None) -> SipMessage | None:
        """One REGISTER (with credentials answering the latest challenge when ``password`` is
        given); its final answer, None when nothing came. A 401 or 407 is kept as the next
        challenge, anything else forgets it."""
        self.cseq += 1
        auth = None
        if password is not None and self.challenge is not None:
            auth = authorization(self.challenge, self.user, password, self.server)
        data = build.register(self.server, user=self.user, local=self.local,
                              call_id=self.call_id, cseq=self.cseq, expires=300,
                              authorization=auth, user_agent=sip.PHONE_AGENT)
        reply = self.dialog.exchange(data, self.call_id, self.cseq, wait=0.5, tries=2)
        fresh = reply is not None and reply.status in (401, 407) and bool(reply.challenges)
        self.challenge = reply if fresh else None
        return reply

    def guess(self, password: str) -> int | None:
        """Answer the latest challenge (asking for one first when none is held) with
        ``password``; the status of the answer, None when nothing came."""
        if self.challenge is None and self.send(None) is None:
            return None
        if self.challenge is None:
            return None
        reply = self.send(password)
        return None if reply is None else reply.status


def _summary(log: Log, dialogs: list[Dialog], **extra: Any) -> dict[str, Any]:
    statuses = [status for _, status in log]
    return {"sent": sum(d.sent for d in dialogs), "answered": sum(d.answered for d in dialogs),
            "guesses": len(log), "guesses_answered": sum(s is not None for s in statuses),
            "wrong_answers": sum(s in WRONG for s in statuses),
            "accepted": sum(s is not None and 200 <= s < 300 for s in statuses),
            "log": log, **extra}


def _paced(jobs: Iterator[tuple[float, Callable[[], None]]], duration: float,
           workers: int) -> None:
    """Run each job at its time (seconds from now) on a pool, so a guess left unanswered
    never holds up the next one; stop starting jobs after ``duration`` or on STOP."""
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for at, job in jobs:
            while not STOP[0] and (left := start + at - time.monotonic()) > 0:
                time.sleep(min(left, 0.1))
            if STOP[0] or at >= duration:
                break
            pool.submit(job)


def stale_phone(args: argparse.Namespace) -> dict[str, Any]:
    """A phone with an old password retrying every ``1/--rate`` seconds (see the module)."""
    dialog = Dialog(args.sources[0], 5060, args.server)
    phone = Registration(dialog, args.server, args.target)
    log: Log = []
    end = time.monotonic() + args.duration
    while time.monotonic() < end and not STOP[0]:
        tried = time.monotonic()
        log.append([round(time.time(), 3), phone.guess("an-old-password")])
        time.sleep(max(0.0, min(end, tried + 1.0 / args.rate) - time.monotonic()))
    return _summary(log, [dialog], sources=1, user=args.target)


def spray(args: argparse.Namespace) -> dict[str, Any]:
    """One host guessing ``SPRAY_AORS`` accounts in turn at ``--rate`` guesses/s."""
    src = args.sources[0]
    dialogs = [Dialog(src, 5600 + i, args.server) for i in range(SPRAY_AORS)]
    log: Log = []
    lock = threading.Lock()

    def guess(n: int) -> None:
        user = sip.phone_user(n % SPRAY_AORS)
        password = (sip.password(user) if n + 1 == SPRAY_CRACK_AT
                    else COMMON_PASSWORDS[(n // SPRAY_AORS) % len(COMMON_PASSWORDS)])
        status = Registration(dialogs[n % SPRAY_AORS], args.server, user).guess(password)
        with lock:
            log.append([round(time.time(), 3), status])

    jobs = ((n / args.rate, lambda n=n: guess(n)) for n in range(10**7))
    _paced(jobs, args.duration, workers=16)
    log.sort()
    accepted = sum(s is not None and 200 <= s < 300 for _, s in log)
    return _summary(log, dialogs, sources=1, aors=SPRAY_AORS, cracked=accepted > 0)


def distributed_guess(args: argparse.Namespace) -> dict[str, Any]:
    """Every source guesses ``--target`` once per ``sources / --rate`` seconds, staggered."""
    dialogs = [Dialog(src, 5500, args.server) for src in args.sources]
    phones = [Registration(d, args.server, args.target) for d in dialogs]
    log: Log = []
    lock = threading.Lock()
    count = len(dialogs)

    def guess(n: int) -> None:
        status = phones[n % count].guess(f"guess-{n}")
        with lock:
            log.append([round(time.time(), 3), status])

    jobs = ((n / args.rate, lambda n=n: guess(n)) for n in range(10**7))
    _paced(jobs, args.duration, workers=min(count, 64))
    log.sort()
    return _summary(log, dialogs, sources=count, target=args.target)
