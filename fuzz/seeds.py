"""Writes the seed corpora under fuzz/corpus/: real SIP shapes, whole packets, NFQUEUE datagrams.

scan/: REGISTER without and with Authorization (MD5, SHA-256, qop), 401s with one and two
challenges and stale=true, 403, 200 OK with several contacts, OPTIONS, compact headers, a
TCP-framed message with a body; each also inside IPv4 and IPv6 UDP and TCP packets, IPv4
options and an IPv6 extension header. index/: the same messages and the differential tests'
shapes (compact, repeated, folded headers, bare CR, NUL, ...). nfq/: datagrams as the kernel
delivers them (a first byte of fuzzing flags, then netlink messages with the packet header,
payload and cap_len attributes), one and several packets, an error message, a cut datagram.

Run ``python fuzz/seeds.py`` after changing it; the files are committed.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import sys
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


def sip(*lines: str, body: str = "") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


AUTH_MD5 = ('Authorization: Digest username="1001", realm="10.0.0.1", nonce="XyZ123", '
            'uri="sip:10.0.0.1", response="0123456789abcdef0123456789abcdef", algorithm=MD5, '
            'cnonce="ab12", qop=auth, nc=00000001')
HEAD = ["Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1;rport", "Max-Forwards: 70",
        'From: "1001" <sip:1001@10.0.0.1>;tag=a1', 'To: "1001" <sip:1001@10.0.0.1>',
        "Call-ID: 5e1f@192.0.2.7"]

MESSAGES = {
    "register-first": sip("REGISTER sip:10.0.0.1 SIP/2.0", *HEAD, "CSeq: 1 REGISTER",
                          "Contact: <sip:1001@192.0.2.7:5060;transport=udp>;expires=600",
                          "Expires: 600", "User-Agent: Yealink SIP-T46S 66.85.0.5",
                          "Content-Length: 0"),
    "register-md5": sip("REGISTER sip:10.0.0.1 SIP/2.0", *HEAD, "CSeq: 2 REGISTER",
                        "Contact: <sip:1001@192.0.2.7:5060>", "Expires: 3600", AUTH_MD5,
                        "User-Agent: friendly-scanner", "Content-Length: 0"),
    "register-sha256": sip(
        "REGISTER sip:pbx.example.com SIP/2.0",
        "v: SIP/2.0/TCP [2001:db8::7]:5060;branch=z9hG4bK-77", "f: <sip:201@pbx.example.com>;tag=7",
        "t: <sip:201@PBX.Example.com:5060>", "i: 8a3c-Zoiper", "CSeq: 9 REGISTER",
        "m: <sip:201@[2001:db8::7]:5060;transport=tcp>;expires=60, *",
        'Authorization: Digest username="201",realm="pbx",nonce="bm9uY2U=",uri="sip:pbx",'
        'response="aa",algorithm=SHA-256,opaque="fg1-abc"', "l: 0"),
    "401-kamailio": sip(
        "SIP/2.0 401 Unauthorized", *HEAD[:1], HEAD[2], HEAD[3] + ";tag=b27e", HEAD[4],
        "CSeq: 1 REGISTER",
        'WWW-Authenticate: Digest realm="10.0.0.1", nonce="ZHk3YmM1ZGUzZjE=", qop="auth"',
        "Server: kamailio (5.6.3 (x86_64/linux))", "Content-Length: 0"),
    "401-two-stale": sip(
        "SIP/2.0 401 Unauthorized", HEAD[0], "To: <sip:1001@10.0.0.1>;tag=x", "Call-ID: c2",
        "CSeq: 3 REGISTER",
        'WWW-Authenticate: Digest realm="r", nonce="n-sha", algorithm=SHA-256, stale=TRUE, '
        'Digest realm="r", nonce="n-md5", algorithm=MD5, stale=true',
        'WWW-Authenticate: Digest realm="r", nonce="n3", opaque="o", stale=false',
        "Content-Length: 0"),
    "401-stale-fast": sip(  # shapes the scan answers itself (tests/unit/test_sip_scan.py)
        "SIP/2.0 401 Unauthorized", "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK2",
        "To: <sip:1001@10.0.0.1>;tag=x", "Call-ID: c2", "CSeq: 3 REGISTER",
        'WWW-Authenticate: Digest realm="r", nonce="n-sha", algorithm=SHA-256, stale=TRUE, '
        'Digest realm="r", nonce="n-md5", algorithm=MD5, stale=true', "Content-Length: 0"),
    "200-two-contacts-fast": sip(
        "SIP/2.0 200 OK", "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK3",
        "Via: SIP/2.0/UDP 10.9.9.9;branch=z9hG4bK4", "To: <sip:1001@10.0.0.1>;tag=y",
        "Call-ID: c3", "CSeq: 4 REGISTER",
        'Contact: <sip:1001@192.0.2.7:5060>;expires=120, "desk, 2" <sip:1001@192.0.2.8>'
        ';expires=3600;q=0.5', "Expires: 60", "Content-Length: 0"),
    "407-proxy": sip("SIP/2.0 407 Proxy Authentication Required", HEAD[0], "Call-ID: c3",
                     "CSeq: 1 INVITE", 'Proxy-Authenticate: Digest realm="r", nonce="p"',
                     "Content-Length: 0"),
    "403": sip("SIP/2.0 403 Forbidden", *HEAD, "CSeq: 2 REGISTER", "Content-Length: 0"),
    "200-contacts": sip(
        "SIP/2.0 200 OK", *HEAD, "CSeq: 2 REGISTER",
        "Contact: <sip:1001@192.0.2.7:5060>;expires=3600, <sip:1001@198.51.100.9>;expires=60",
        'Contact: "x" <sip:a@[2001:db8::1]>;q=0.5;expires=120', "Expires: 600",
        "Content-Length: 0"),
    "options": sip("OPTIONS sip:1001@192.0.2.7:5060 SIP/2.0", *HEAD, "CSeq: 10 OPTIONS",
                   "Accept: application/sdp", "Content-Length: 0"),
    "invite-body": sip("INVITE sip:1002@10.0.0.1 SIP/2.0", *HEAD, "CSeq: 20 INVITE",
                       "Content-Type: application/sdp", "Content-Length: 26",
                       body="v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"[:26]),
    "bare-lf": b"REGISTER sip:x SIP/2.0\nCall-ID: c\nCSeq: 1 REGISTER\nTo: <sip:a@x>\n\n",
}


def ipv4(proto: int, l4: bytes, options: bytes = b"") -> bytes:
    ihl = 5 + len(options) // 4
    return struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(l4), 1, 0x4000, 64, proto,
                       0, socket.inet_aton("192.0.2.7"), socket.inet_aton("10.0.0.1")) \
        + options + l4


def ipv6(proto: int, l4: bytes, ext: bytes = b"") -> bytes:
    first = 0 if ext else proto  # a hop-by-hop header first when there is one
    return struct.pack("!IHBB16s16s", 6 << 28, len(ext) + len(l4), first, 64,
                       socket.inet_pton(socket.AF_INET6, "2001:db8::7"),
                       socket.inet_pton(socket.AF_INET6, "fd00::1")) + ext + l4


def udp(payload: bytes, sport: int = 5060) -> bytes:
    return struct.pack("!HHHH", sport, 5060, 8 + len(payload), 0) + payload


def tcp(payload: bytes) -> bytes:
    return struct.pack("!HHIIBBHHH", 40000, 5060, 1, 0, 5 << 4, 0x18, 65535, 0, 0) + payload


def packets() -> dict[str, bytes]:
    out = {}
    for name in ("register-first", "register-md5", "401-stale-fast", "200-two-contacts-fast",
                 "401-two-stale"):
        msg = MESSAGES[name]
        out[f"v4-udp-{name}"] = ipv4(17, udp(msg))
        out[f"v4-tcp-{name}"] = ipv4(6, tcp(msg))
        out[f"v6-udp-{name}"] = ipv6(17, udp(msg))
        out[f"v6-tcp-{name}"] = ipv6(6, tcp(msg))
    msg = MESSAGES["register-md5"]
    out["v4-options-udp"] = ipv4(17, udp(msg), options=b"\x01\x01\x01\x00")
    out["v6-hop-by-hop-udp"] = ipv6(17, udp(msg), ext=bytes([17, 0, 1, 4, 0, 0, 0, 0]))
    return out


def nlmsg(kind: int, body: bytes, seq: int = 0) -> bytes:
    msg = struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body
    return msg + b"\0" * (-len(msg) % 4)


def attr(kind: int, value: bytes) -> bytes:
    a = struct.pack("=HH", 4 + len(value), kind) + value
    return a + b"\0" * (-len(a) % 4)


def packet_msg(pid: int, payload: bytes, hook: int = 1, cap_len: int | None = None,
               stamp: bytes | None = None) -> bytes:
    nfgen = struct.pack("!BBH", 2, 0, 0)
    attrs = attr(1, struct.pack("!IHB", pid, 0x0800, hook))
    if stamp is not None:  # NFQA_TIMESTAMP, before the payload as the kernel puts it
        attrs += attr(4, stamp)
    attrs += attr(10, payload)
    if cap_len is not None:
        attrs += attr(13, struct.pack("!I", cap_len))
    return nlmsg((3 << 8) | 0, nfgen + attrs)


def datagrams() -> dict[str, bytes]:
    register = ipv4(17, udp(MESSAGES["register-md5"]))
    answer = ipv4(17, udp(MESSAGES["401-kamailio"]))
    error = nlmsg(2, struct.pack("=i", -1) + nlmsg(0x301, b"")[:16])
    one = packet_msg(7, register)
    return {
        "one-packet": b"\0" + one,
        "one-packet-no-callback": b"\2" + one,
        "two-packets-out-and-in": b"\0" + packet_msg(8, answer, hook=3) + packet_msg(9, register),
        "cap-len": b"\0" + packet_msg(10, register[:64], cap_len=len(register)),
        "callback-error": b"\0" + packet_msg(11, b"!" + register[1:]),
        "error-then-packet": b"\0" + error + packet_msg(12, register),
        "cut-datagram": b"\1" + packet_msg(13, register)[:-40],
        "no-packet-header": b"\0" + nlmsg((3 << 8) | 0, b"\2\0\0\0" + attr(10, register)),
        "stamped": b"\0" + packet_msg(14, register, stamp=struct.pack(">QQ", 1796280000, 123456)),
        "stamp-bad-usec": b"\0" + packet_msg(15, register,
                                             stamp=struct.pack(">QQ", 1796280000, 10**6)),
        "stamp-short": b"\0" + packet_msg(16, register, stamp=b"\0" * 12),
    }


def write(folder: Path, seeds: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)  # inputs merged in from fuzzing runs stay
    for name, data in seeds.items():
        digest = hashlib.sha1(data).hexdigest()[:8]
        (folder / f"{name}-{digest}").write_bytes(data)


def shapes() -> dict[str, bytes]:
    """The differential tests' shapes (tests/unit/sip_corpus.py): common ones the C index
    answers and unusual ones it leaves to the Python parser."""
    sys.path.insert(0, str(CORPUS.parent.parent))
    from tests.unit.sip_corpus import DECLINED, FAST

    return {f"shape-{name.replace(' ', '-')}": data
            for name, data in {**FAST, **DECLINED}.items()}


def main() -> None:
    write(CORPUS / "scan", {**MESSAGES, **packets()})
    write(CORPUS / "index", {**MESSAGES, **shapes()})
    write(CORPUS / "nfq", datagrams())


if __name__ == "__main__":
    main()
