"""Attack: enumerate accounts and where they are by asking the registrar without credentials
(INVITE used to answer 302 with the phone's contact, 480 offline, 404 unknown; per-account
algorithm lists showed in challenges). Every answer to an unauthenticated caller must be the
same, byte for byte but for Call-ID, tags and nonces, whoever the request names."""

from __future__ import annotations

import socket
import threading

import pytest

from floodguard.registrar.responses import response
from floodguard.registrar.uac import Uac
from floodguard.sip.build import request
from floodguard.sip.message import SipParseError, parse_message
from tests.integration.registrar_helpers import (
    CLIENT_IP,
    CLIENT_IP2,
    SERVER_IP,
    exchange,
    host_port,
    normalize,
    read_stream_bytes,
    registrar_env,
    tcp_socket,
    udp_socket,
)

pytestmark = pytest.mark.root("ip", "sipp")

SERVER = (SERVER_IP, 5060)
# 1001 registered and answering OPTIONS, 1002 registered but silent (offline), 1003 never
# registered, "nobody" has no account.
CALLEES = ("1001", "1002", "1003", "nobody")
METHODS = ("INVITE", "REGISTER", "OPTIONS", "MESSAGE", "SUBSCRIBE", "BYE", "CANCEL", "INFO")


class Responder(threading.Thread):
    """Answers the registrar's OPTIONS probes on a phone's socket, so it stays online."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.stop = threading.Event()

    def run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
                msg = parse_message(data)
            except (TimeoutError, SipParseError):
                continue
            except OSError:
                return
            if msg.is_request and msg.method == "OPTIONS":
                self.sock.sendto(response(msg, 200, addr[0], addr[1]), addr)


def register(sock: socket.socket, user: str) -> None:
    uac = Uac(user, f"secret{user}", f"{SERVER_IP}:5060",
              host_port(CLIENT_IP, sock.getsockname()[1]))
    challenge = exchange(sock, uac.register(), SERVER)
    assert exchange(sock, uac.register(authorization=uac.authorize(challenge)), SERVER).status \
        == 200


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registrar-enumeration")
    with registrar_env(tmp, time_to_live=2, liveness_timeout=0.5) as (pair, server):
        online, silent = udp_socket(pair.client_ns, CLIENT_IP), udp_socket(pair.client_ns,
                                                                          CLIENT_IP)
        responder = Responder(online)
        try:
            register(online, "1001")
            register(silent, "1002")
            responder.start()
            state = {}
            server.wait_for(lambda rows: state.update({r.aor.split("@")[0]: r.online
                                                       for r in rows}) or
                            state == {"1001": True, "1002": False}, timeout=8)
            yield pair, server
        finally:
            responder.stop.set()
            responder.join(2)
            online.close()
            silent.close()


def same_request(method: str, callee: str, transport: str, local: str) -> bytes:
    """One request per method, the same for every callee but the user part."""
    uri = f"sip:{callee}@{SERVER_IP}:5060"
    headers = [f"Contact: <sip:caller@{local}>"]
    from_uri = f"sip:caller@{SERVER_IP}"
    if method == "REGISTER":
        uri, from_uri = f"sip:{SERVER_IP}:5060", f"sip:{callee}@{SERVER_IP}"
        headers.append("Expires: 3600")
    return request(method, uri, via=local, branch="z9hG4bKenum", from_uri=from_uri,
                   to_uri=f"sip:{callee}@{SERVER_IP}", call_id="enum@attacker", cseq=1,
                   transport=transport, headers=headers)


def test_unauthenticated_udp_answers_are_identical_for_every_callee(env):
    pair, _ = env
    attacker = udp_socket(pair.client_ns, CLIENT_IP2)
    local = host_port(CLIENT_IP2, attacker.getsockname()[1])
    try:
        for method in METHODS:
            answers = {}
            for callee in CALLEES:
                attacker.sendto(same_request(method, callee, "UDP", local), SERVER)
                answers[callee], _ = attacker.recvfrom(65535)
            shown = {callee: normalize(raw, callee) for callee, raw in answers.items()}
            assert len(set(shown.values())) == 1, (method, shown)
            status = parse_message(answers["1001"]).status
            assert status not in (302, 404, 480), method
            if method in ("INVITE", "REGISTER"):
                assert status == 401
                assert not parse_message(answers["1001"]).contacts
    finally:
        attacker.close()


def test_unauthenticated_tcp_invites_are_identical_for_every_callee(env):
    pair, _ = env
    with tcp_socket(pair.client_ns, CLIENT_IP2, SERVER) as conn:
        local = host_port(*conn.getsockname()[:2])
        buffer = bytearray()
        shown = {}
        for callee in CALLEES:
            conn.sendall(same_request("INVITE", callee, "TCP", local))
            raw = read_stream_bytes(conn, buffer)
            assert raw.startswith(b"SIP/2.0 401 ")
            shown[callee] = normalize(raw, callee)
        assert len(set(shown.values())) == 1, shown


def test_authenticated_caller_still_gets_302_480_404(env):
    pair, _ = env
    caller_sock = udp_socket(pair.client_ns, CLIENT_IP2)
    try:
        caller = Uac("1004", "secret1004", f"{SERVER_IP}:5060",
                     host_port(CLIENT_IP2, caller_sock.getsockname()[1]))
        got = {}
        for callee in CALLEES:
            challenge = exchange(caller_sock, caller.invite(callee), SERVER)
            assert challenge.status == 401
            answer = exchange(caller_sock, caller.invite(
                callee, cseq=2, authorization=caller.authorize_invite(challenge, callee)),
                SERVER)
            got[callee] = answer.status
            if callee == "1001":
                [contact] = answer.contacts
                assert contact.uri.startswith(f"sip:1001@{CLIENT_IP}:")
        assert got == {"1001": 302, "1002": 480, "1003": 480, "nobody": 404}
    finally:
        caller_sock.close()
