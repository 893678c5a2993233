"""SIP messages shared by the differential tests of the C scans (test_sip_scan.py for the
guard's scan, test_sip_index.py for the parser's index): common shapes the fast paths must answer,
unusual ones they leave to the Python parser, and the pieces generated messages are built from."""

from __future__ import annotations

from hypothesis import strategies as st


def sip(*lines: str, body: str = "") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


REGISTER = sip(
    "REGISTER sip:10.0.0.1 SIP/2.0",
    "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1;rport",
    "Max-Forwards: 70",
    'From: "1001" <sip:1001@10.0.0.1>;tag=a1',
    'To: "1001" <sip:1001@10.0.0.1>',
    "Call-ID: 5e1f@192.0.2.7",
    "CSeq: 2 REGISTER",
    "Contact: <sip:1001@192.0.2.7:5060;transport=udp>;expires=600",
    "Expires: 600",
    "User-Agent: Yealink SIP-T46S 66.85.0.5",
    'Authorization: Digest username="1001", realm="10.0.0.1", nonce="XyZ123", '
    'uri="sip:10.0.0.1", response="0123456789abcdef0123456789abcdef", algorithm=MD5, '
    'cnonce="ab12", qop=auth, nc=00000001',
    "Content-Length: 0",
)

# Shapes the fast path must answer (then equal to the Python parser).
FAST = {
    "yealink register": REGISTER,
    # two bytes after the blank line are a body, not the third CRLF of CRLF CRLF CRLF
    "a two-byte body without content-length": sip("OPTIONS sip:x SIP/2.0", "Call-ID: c",
                                                  body="ab"),
    "a two-byte body that starts with cr": sip("OPTIONS sip:x SIP/2.0", "Call-ID: c",
                                               body="\rx"),
    "first register": sip(
        "REGISTER sip:pbx.example.com SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.4:5062;branch=z9hG4bK-524287-1---abc;rport",
        "To: <sip:201@PBX.Example.com:5060>",
        "From: <sip:201@pbx.example.com>;tag=77",
        "Call-ID: 8a3c-Zoiper",
        "CSeq: 1 REGISTER",
        'Contact: <sip:201@198.51.100.4:5062;rinstance=6a1;transport=UDP>;'
        '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1;expires=60',
        "Allow: INVITE, ACK, CANCEL, BYE, NOTIFY, REFER, MESSAGE, OPTIONS, INFO, SUBSCRIBE",
        "User-Agent: Z 5.6.1 v2.10.19.9",
        "Allow-Events: presence, kpml, talk",
        "Content-Length: 0",
    ),
    "kamailio 401": sip(
        "SIP/2.0 401 Unauthorized",
        "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1;rport=5060;received=192.0.2.7",
        'From: "1001" <sip:1001@10.0.0.1>;tag=a1',
        'To: "1001" <sip:1001@10.0.0.1>;tag=b27e1a1d33761e85846fc98f5f3a7e58.3fa1',
        "Call-ID: 5e1f@192.0.2.7",
        "CSeq: 1 REGISTER",
        'WWW-Authenticate: Digest realm="10.0.0.1", nonce="ZHk3YmM1ZGUzZjE=", qop="auth"',
        "Server: kamailio (5.6.3 (x86_64/linux))",
        "Content-Length: 0",
    ),
    "stale 401 with two challenges": sip(
        "SIP/2.0 401 Unauthorized",
        "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK2",
        "To: <sip:1001@10.0.0.1>;tag=x",
        "Call-ID: c2",
        "CSeq: 3 REGISTER",
        'WWW-Authenticate: Digest realm="r", nonce="n-sha", algorithm=SHA-256, stale=TRUE, '
        'Digest realm="r", nonce="n-md5", algorithm=MD5, stale=true',
        "Content-Length: 0",
    ),
    "200 with two contacts": sip(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK3",
        "Via: SIP/2.0/UDP 10.9.9.9;branch=z9hG4bK4",
        "To: <sip:1001@10.0.0.1>;tag=y",
        "Call-ID: c3",
        "CSeq: 4 REGISTER",
        'Contact: <sip:1001@192.0.2.7:5060>;expires=120, "desk, 2" <sip:1001@192.0.2.8>'
        ';expires=3600;q=0.5',
        "Expires: 60",
        "Content-Length: 0",
    ),
    "200 with expires header only": sip(
        "SIP/2.0 200 OK", "To: sip:1001@[2001:DB8::1]:5060", "Call-ID: c4",
        "CSeq: 5 REGISTER", "Contact: <sip:1001@h>", "Expires:  1800 ", "Content-Length: 0",
    ),
    "407 proxy challenge": sip(
        "SIP/2.0 407 Proxy Authentication Required", "To: <tel:+15551234>", "Call-ID: c5",
        "CSeq: 1 INVITE", 'Proxy-Authenticate: Digest realm="p", nonce="pn", opaque=""',
        "Content-Length: 0",
    ),
    "invite with body": sip(
        "INVITE sip:1002@10.0.0.1 SIP/2.0", "To: <sip:1002@10.0.0.1>", "Call-ID: c6",
        "CSeq: 10 INVITE", "Content-Type: application/sdp", "Content-Length: 10",
        body="v=0\r\no=x\r\n",
    ),
    "options keepalive": sip("OPTIONS sip:10.0.0.1 SIP/2.0", "Call-ID: k", "CSeq: 1 OPTIONS"),
    "scanner": sip(
        "REGISTER sip:10.0.0.1 SIP/2.0", "To: <sip:100@10.0.0.1>", "Call-ID: s",
        "CSeq: 1 REGISTER", "User-Agent: friendly-scanner", "Content-Length: 0",
    ),
    "proxy authorization and basic": sip(
        "REGISTER sip:x SIP/2.0", "To: <sip:a@x>", "Call-ID: p", "CSeq: 1 REGISTER",
        "Authorization: Basic QWxhZGRpbjpvcGVu",
        'Proxy-Authorization: Digest username="a", nonce="pn2", realm="x"',
    ),
    "basic only": sip("REGISTER sip:x SIP/2.0", "To: <sip:a@x>", "Authorization: Basic abc"),
    "lower-case names and odd spacing": sip(
        "register sip:x SIP/2.0", "to:   Bob <sip:Bob@X.ORG>  ", "call-id:\tc7 ",
        "cseq:  7   register", "contact: <sip:b@h>;EXPIRES=\"45\"", "user-agent: UA",
    ),
    "utf-8 display name and agent": (
        "REGISTER sip:x SIP/2.0\r\nFrom: \"Zoë\" <sip:z@x>\r\nUser-Agent: Zoë phone\r\n"
        "Call-ID: ü\r\nCSeq: 1 REGISTER\r\n\r\n").encode(),
    "invalid utf-8 user agent": b"REGISTER sip:x SIP/2.0\r\nUser-Agent: \xff\xfe bad\r\n\r\n",
    # separators inside quotes and <...>: where the parser's splits differ
    "comma and expires in a display name": sip(
        "SIP/2.0 200 OK", "CSeq: 1 REGISTER", 'Contact: "a,b;expires=5" <sip:x@y>;expires=7'),
    "bracket in a parameter": sip(
        "SIP/2.0 200 OK", "CSeq: 1 REGISTER", "Contact: <sip:x@y>;a=<b;expires=9>;expires=7"),
    "quoted parameter": sip(
        "SIP/2.0 200 OK", "CSeq: 1 REGISTER", 'Contact: <sip:x@y>;p="q;expires=3";expires=8'),
    "token display name": sip(
        "REGISTER sip:x SIP/2.0", "To: Bob Smith <sip:BOB@Host;user=phone>", "Call-ID: c"),
    "semicolon before a bracket": sip(
        "REGISTER sip:x SIP/2.0", "To: sip:a@b;x=<sip:u@h>", "Call-ID: c"),
    "unbracketed to with params": sip(
        "REGISTER sip:x SIP/2.0", "To: sip:u:pw@H.example:5061;tag=9", "Call-ID: c"),
    "auth items with spaces and commas": sip(
        "REGISTER sip:x SIP/2.0",
        'Authorization: Digest username = "u" ,nonce= n1 ,, realm="r",Digest nonce="n2"'),
    "auth value with an equals sign": sip(
        "SIP/2.0 401 Unauthorized", "CSeq: 1 REGISTER",
        'WWW-Authenticate: Digest nonce=a=b, stale=false, Basic realm="x"'),
}

# Shapes the fast path leaves to the Python parser (valid or not).
DECLINED = {
    "compact forms": sip("REGISTER sip:x SIP/2.0", "i: c", "t: <sip:a@x>", "l: 0"),
    "folded": sip("REGISTER sip:x SIP/2.0", "Subject: a", " b"),
    "bare lf": b"REGISTER sip:x SIP/2.0\nCall-ID: c\n\n",
    "leading crlf": b"\r\n" + REGISTER,
    "two authorization headers": sip(
        "REGISTER sip:x SIP/2.0", 'Authorization: Digest nonce="a"',
        'Authorization: Digest nonce="b"'),
    "escaped quote": sip("REGISTER sip:x SIP/2.0", 'Authorization: Digest nonce="a\\"b"'),
    "non-ascii to": sip("REGISTER sip:x SIP/2.0", "To: <sip:zoë@x>"),
    "lower-case version": sip("SIP/2.0 200 OK".lower(), "Call-ID: c"),
    "bad cseq": sip("REGISTER sip:x SIP/2.0", "CSeq: x REGISTER"),
    "truncated body": sip("INVITE sip:x SIP/2.0", "Content-Length: 50", body="abc"),
    "no end of headers": b"REGISTER sip:x SIP/2.0\r\nCall-ID: c\r\n",
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "empty value": sip("REGISTER sip:x SIP/2.0", "Call-ID:"),
    "space in name": sip("REGISTER sip:x SIP/2.0", "Call-ID : c"),
    "nul byte": sip("REGISTER sip:x SIP/2.0", "Call-ID: c\x00d"),
    # the parser's header block ends at the last of these CRLFs: no room for the body
    "crlf crlf crlf and a length": sip("REGISTER sip:x SIP/2.0", "Content-Length: 2") + b"\r\n",
}



PIECES = [
    "sip:", "SIP:", "sips:", "tel:", "@", "[", "]", "<", ">", '"', ";", ",", "=", ":", " ",
    "\t", "a", "B", "1", "expires", "EXPIRES", "nonce", "stale", "true", "Digest", "digest",
    "username", "tag", "*", "?", "é", "\\", "600", "-", ".",
]
HEADER_NAMES = [
    "To", "to", "TO", "Contact", "contact", "Call-ID", "CSeq", "Expires", "User-Agent",
    "Authorization", "Proxy-Authorization", "WWW-Authenticate", "Proxy-Authenticate",
    "Content-Length", "Via", "X-Other", "t", "m", "i", "Max-Forwards",
]
values = st.lists(st.sampled_from(PIECES), max_size=24).map("".join)
header = st.tuples(st.sampled_from(HEADER_NAMES), values).map(lambda nv: f"{nv[0]}:{nv[1]}")
start = st.sampled_from([
    "REGISTER sip:x SIP/2.0", "INVITE sip:a@b SIP/2.0", "SIP/2.0 401 Unauthorized",
    "SIP/2.0 200 OK", "SIP/2.0 403", "OPTIONS sip:x SIP/2.0",
])
