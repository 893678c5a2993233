"""Writes the malformed-message corpus in malformed/ and its expectations in expected.toml.

Our own cases in the spirit of RFC 4475 (torture tests): broken start lines, framing, headers,
sizes and values. Each file is one UDP datagram; `expected.toml` maps the file name to the answer
the registrar must give: a status code, or "drop" (no answer at all). Run it again after editing
a case: `python tests/assets/registrar/make_malformed.py`.
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "malformed"

VIA = "Via: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bK-mal-{n}"
BASE = [
    "From: <sip:alice@example.com>;tag=a1",
    "To: <sip:bob@example.com>",
    "Call-ID: mal-{n}@192.0.2.9",
]


def request(start: str, *headers: str, n: str, body: str = "", cseq: str | None = None,
            length: str | None = None, via: bool = True, base: bool = True) -> bytes:
    method = start.split(" ", 1)[0]
    lines = [start]
    if via:
        lines.append(VIA.format(n=n))
    if base:
        lines += [h.format(n=n) for h in BASE]
        lines.append(f"CSeq: {cseq if cseq is not None else '1 ' + method}")
    lines += list(headers)
    lines.append(f"Content-Length: {length if length is not None else len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


CASES: list[tuple[str, bytes, str | int]] = []


def case(name: str, data: bytes, expected: str | int) -> None:
    CASES.append((name, data, expected))


case("binary_garbage", bytes(range(256)) * 4, "drop")
case("crlf_only", b"\r\n\r\n\r\n", "drop")
case("http_request", b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", "drop")
case("status_line_garbage", b"SIP/2.0 9999 Nope\r\n" + VIA.format(n="s").encode()
     + b"\r\n\r\n", "drop")
case("no_via", request("OPTIONS sip:reg.example.com SIP/2.0", n="novia", via=False), "drop")
case("ack_malformed_cseq", request("ACK sip:bob@example.com SIP/2.0", n="ack", cseq="x ACK"),
     "drop")
case("double_space_request_line",
     request("OPTIONS  sip:reg.example.com SIP/2.0", n="dsp", cseq="1 OPTIONS"), 400)
case("request_line_missing_uri", request("OPTIONS SIP/2.0", n="nouri", cseq="1 OPTIONS"), 400)
case("unknown_sip_version",
     request("OPTIONS sip:reg.example.com SIP/7.0", n="ver", cseq="1 OPTIONS"), 505)
case("negative_content_length", request("OPTIONS sip:reg.example.com SIP/2.0", n="neg",
                                        length="-5"), 400)
case("content_length_beyond_body", request("OPTIONS sip:reg.example.com SIP/2.0", n="long",
                                           body="v=0\r\n", length="5000"), 400)
case("content_length_not_a_number", request("OPTIONS sip:reg.example.com SIP/2.0", n="nan",
                                            length="ten"), 400)
case("conflicting_content_lengths",
     request("OPTIONS sip:reg.example.com SIP/2.0", "Content-Length: 7", n="cl2"), 400)
case("cseq_not_a_number", request("OPTIONS sip:reg.example.com SIP/2.0", n="cseqx",
                                  cseq="one OPTIONS"), 400)
case("cseq_too_large", request("OPTIONS sip:reg.example.com SIP/2.0", n="cseqbig",
                               cseq="4294967296 OPTIONS"), 400)
case("cseq_method_mismatch", request("OPTIONS sip:reg.example.com SIP/2.0", n="cseqm",
                                     cseq="1 INVITE"), 400)
case("missing_call_id",
     b"OPTIONS sip:reg.example.com SIP/2.0\r\n" + VIA.format(n="nocid").encode()
     + b"\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\n"
       b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", 400)
case("missing_cseq",
     b"OPTIONS sip:reg.example.com SIP/2.0\r\n" + VIA.format(n="nocseq").encode()
     + b"\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\n"
       b"Call-ID: nocseq@x\r\nContent-Length: 0\r\n\r\n", 400)
case("missing_from",
     b"OPTIONS sip:reg.example.com SIP/2.0\r\n" + VIA.format(n="nofrom").encode()
     + b"\r\nTo: <sip:b@example.com>\r\nCall-ID: nofrom@x\r\nCSeq: 1 OPTIONS\r\n"
       b"Content-Length: 0\r\n\r\n", 400)
case("missing_to",
     b"OPTIONS sip:reg.example.com SIP/2.0\r\n" + VIA.format(n="noto").encode()
     + b"\r\nFrom: <sip:a@example.com>;tag=1\r\nCall-ID: noto@x\r\nCSeq: 1 OPTIONS\r\n"
       b"Content-Length: 0\r\n\r\n", 400)
case("header_without_colon", request("OPTIONS sip:reg.example.com SIP/2.0",
                                     "This line has no colon", n="nocolon"), 400)
case("continuation_before_any_header",
     request("OPTIONS sip:reg.example.com SIP/2.0", n="fold").replace(
         b"SIP/2.0\r\n", b"SIP/2.0\r\n  folded-first-line\r\n", 1), 400)
case("header_too_long", request("OPTIONS sip:reg.example.com SIP/2.0",
                                "Subject: " + "x" * 9000, n="hlong"), 400)
case("too_many_headers", request("OPTIONS sip:reg.example.com SIP/2.0",
                                 *[f"X-Filler-{i}: {i}" for i in range(200)], n="many"), 400)
case("nul_in_to_uri",
     request("OPTIONS sip:reg.example.com SIP/2.0", n="nul").replace(
         b"To: <sip:bob@example.com>", b"To: <sip:bob\x00@example.com>"), 400)
case("unknown_uri_scheme", request("OPTIONS foo:reg.example.com SIP/2.0", n="scheme"), 416)
case("invite_unknown_uri_scheme", request("INVITE foo:bob@example.com SIP/2.0", n="ischeme"),
     416)
case("register_unknown_uri_scheme",
     request("REGISTER foo:reg.example.com SIP/2.0", n="rscheme"), 416)
case("register_to_without_user",
     request("REGISTER sip:reg.example.com SIP/2.0", n="touser").replace(
         b"To: <sip:bob@example.com>", b"To: <sip:example.com>"), 400)
case("unsupported_require", request("OPTIONS sip:reg.example.com SIP/2.0",
                                    "Require: nonsenseextension", n="req"), 420)
case("unterminated_quote_in_from",
     request("OPTIONS sip:reg.example.com SIP/2.0", n="quote").replace(
         b"From: <sip:alice@example.com>;tag=a1", b'From: "Alice <sip:alice@example.com>;tag=a1'),
     400)
case("bare_lf_line_endings",
     request("OPTIONS sip:reg.example.com SIP/2.0", n="lf").replace(b"\r\n", b"\n"), 200)
case("compact_forms_and_odd_case",
     b"oPtIoNs sip:reg.example.com SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bK-cf\r\n"
     b"f: <sip:a@example.com>;tag=1\r\nt: <sip:b@example.com>\r\ni: cf@x\r\n"
     b"CSeq: 1 OPTIONS\r\nl: 0\r\n\r\n", 200)
case("escaped_and_folded_headers",
     b"OPTIONS sip:reg.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5070\r\n"
     b" ;branch=z9hG4bK-fold\r\nFrom: \"a \\\"quoted\\\" name\" <sip:a@example.com>;tag=1\r\n"
     b"To: <sip:b@example.com>\r\nCall-ID: fold@x\r\nCSeq: 1 OPTIONS\r\n"
     b"Content-Length: 0\r\n\r\n", 200)
case("unknown_method", request("FROBNICATE sip:reg.example.com SIP/2.0", n="frob"), 405)
case("huge_contact_list",
     request("REGISTER sip:reg.example.com SIP/2.0",
             "Contact: " + ", ".join(f"<sip:bob@192.0.2.{i % 250}:{5000 + i}>" for i in range(300)),
             n="contacts"), 400)
case("many_contact_lines",
     request("REGISTER sip:reg.example.com SIP/2.0",
             *["Contact: " + ", ".join(f"<sip:bob@192.0.2.{j}:{5000 + i}>" for j in range(10))
               for i in range(60)], n="clines"), 401)
case("register_malformed_expires",
     request("REGISTER sip:reg.example.com SIP/2.0", "Expires: soon", n="exp"), 401)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.sip"):
        old.unlink()
    lines = ["# file -> status code the registrar answers, or \"drop\" for no answer",
             "# generated by make_malformed.py"]
    for name, data, expected in CASES:
        (OUT / f"{name}.sip").write_bytes(data)
        value = f'"{expected}"' if isinstance(expected, str) else str(expected)
        lines.append(f'"{name}.sip" = {value}')
    (HERE / "expected.toml").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
