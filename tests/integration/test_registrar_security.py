"""Replays, foreign nonces and malformed input against the real registrar in a namespace,
over IPv4 and IPv6."""

import time
import tomllib

import pytest

from floodguard.registrar.uac import Uac

from .registrar_helpers import (
    ASSETS,
    CLIENT_IP,
    CLIENT_IP2,
    CLIENT_IP6,
    SERVER_IP,
    SERVER_IP6,
    exchange,
    host_port,
    registrar_env,
    udp_socket,
)

pytestmark = pytest.mark.root("ip", "sipp")

SERVER = (SERVER_IP, 5060)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registrar-security")
    with registrar_env(tmp, listen=[f"{SERVER_IP}:5060", f"[{SERVER_IP6}]:5060"]) as (pair, srv):
        yield pair, srv


@pytest.fixture
def sockets(env):
    pair, _ = env
    opened = []

    def make(ip=CLIENT_IP):
        sock = udp_socket(pair.client_ns, ip)
        opened.append(sock)
        return sock

    yield make
    for sock in opened:
        sock.close()


def uac_for(sock, user="1001", ip=CLIENT_IP, server=f"{SERVER_IP}:5060"):
    return Uac(user, f"secret{user}", server, host_port(ip, sock.getsockname()[1]))


def contacts(server, user):
    return {r.contact for r in server.endpoints() if r.aor.startswith(f"{user}@")}


def test_replayed_register_is_rejected(env, sockets):
    _, server = env
    phone, attacker, attacker2 = sockets(), sockets(), sockets(CLIENT_IP2)
    uac = uac_for(phone)
    challenge = exchange(phone, uac.register(), SERVER)
    captured = uac.register(authorization=uac.authorize(challenge))
    assert exchange(phone, captured, SERVER).status == 200
    # Byte-for-byte replay from another port and from another address.
    assert exchange(attacker, captured, SERVER).status == 401
    assert exchange(attacker2, captured, SERVER).status == 401
    # A replay rewritten to divert calls (new Contact and branch) fails too.
    hijack = captured.replace(uac.contact.encode(), f"sip:1001@{CLIENT_IP}:6666".encode())
    hijack = hijack.replace(b"branch=z9hG4bK", b"branch=z9hG4bKevil")
    assert exchange(attacker, hijack, SERVER).status == 401
    time.sleep(0.3)
    assert contacts(server, "1001") == {uac.contact}


def test_nonce_from_another_source_is_rejected(env, sockets):
    _, server = env
    victim, other = sockets(CLIENT_IP), sockets(CLIENT_IP2)
    uac = uac_for(victim, "1002")
    challenge = exchange(victim, uac.register(), SERVER)
    moved = uac_for(other, "1002", ip=CLIENT_IP2)
    answer = exchange(other, moved.register(authorization=moved.authorize(challenge)), SERVER)
    assert answer.status == 401 and not any(c.stale for c in answer.challenges)
    time.sleep(0.3)
    assert contacts(server, "1002") == set()


def test_malformed_corpus_is_answered_400_or_dropped_and_others_are_served(env, sockets):
    pair, server = env
    expected = tomllib.loads((ASSETS / "expected.toml").read_text())
    bad = sockets()
    drops = []
    for name, want in sorted(expected.items()):
        data = (ASSETS / "malformed" / name).read_bytes()
        if want == "drop":
            bad.sendto(data, SERVER)
            drops.append(name)
            continue
        bad.sendto(data, SERVER)
        reply, _ = bad.recvfrom(65535)
        assert int(reply.split(b" ", 2)[1]) == want, name
    bad.settimeout(0.5)
    with pytest.raises(TimeoutError):
        reply, _ = bad.recvfrom(65535)
        pytest.fail(f"answered a packet that must be dropped: {reply[:80]!r}")
    assert drops
    # Everyone else is still served.
    good = sockets()
    uac = uac_for(good, "1003")
    challenge = exchange(good, uac.register(), SERVER)
    assert exchange(good, uac.register(authorization=uac.authorize(challenge)), SERVER).status \
        == 200
    assert server.proc.poll() is None


def test_flood_of_garbage_does_not_disturb_a_registration(env, sockets):
    _, server = env
    noisy, good = sockets(CLIENT_IP2), sockets()
    uac = uac_for(good, "1004")
    challenge = exchange(good, uac.register(), SERVER)
    for i in range(2000):
        noisy.sendto(bytes([i % 256]) * (i % 900 + 1), SERVER)
    assert exchange(good, uac.register(authorization=uac.authorize(challenge)), SERVER).status \
        == 200


def test_register_and_invite_over_ipv6(env, sockets):
    _, server = env
    sock = sockets(CLIENT_IP6)
    uac = uac_for(sock, "1005", ip=CLIENT_IP6, server=f"[{SERVER_IP6}]:5060")
    dest = (SERVER_IP6, 5060)
    challenge = exchange(sock, uac.register(), dest)
    ok = exchange(sock, uac.register(authorization=uac.authorize(challenge)), dest)
    assert ok.status == 200 and [c.uri for c in ok.contacts] == [uac.contact]
    challenge = exchange(sock, uac.invite("1005"), dest)
    assert challenge.status == 401 and not challenge.contacts
    moved = exchange(sock, uac.invite("1005", cseq=2,
                                      authorization=uac.authorize_invite(challenge, "1005")), dest)
    assert moved.status == 302 and moved.contacts[0].uri == uac.contact
    time.sleep(0.3)
    [row] = [r for r in server.endpoints() if r.aor.startswith("1005@")]
    assert row.source == f"udp:[{CLIENT_IP6}]:{sock.getsockname()[1]}"
