"""The real registrar in a network namespace, driven by SIPp: REGISTER with digest auth,
re-REGISTER, un-REGISTER, wrong password, INVITE redirects, TCP, restart persistence."""

import json
import subprocess

import pytest

from floodguard.registrar.uac import Uac

from .registrar_helpers import (
    CLIENT_IP,
    PYTHON,
    REPO,
    SERVER_IP,
    auth_line,
    exchange,
    invite_line,
    invite_scenario,
    registrar_env,
    sipp,
    sipp_error,
    udp_socket,
)

pytestmark = pytest.mark.root("ip", "sipp")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registrar-sipp")
    with registrar_env(tmp) as (pair, server):
        yield pair, server, tmp


def ok(result, cwd):
    assert result.returncode == 0, sipp_error(result, cwd)


def bindings(server, user):
    return [r for r in server.endpoints() if r.aor.startswith(f"{user}@")]


def test_register_with_digest_auth(env):
    pair, server, tmp = env
    ok(sipp(pair, "register.xml", user_lines=[auth_line("1001")], port=5071, cwd=tmp), tmp)
    server.wait_for(lambda rows: any(r.aor == f"1001@{SERVER_IP}" for r in rows), 2)
    [row] = bindings(server, "1001")
    assert row.contact == f"sip:1001@{CLIENT_IP}:5071;transport=UDP"
    assert row.source == f"udp:{CLIENT_IP}:5071" and row.online
    assert 3590 <= row.expires_in <= 3600


def test_reregister_refreshes_the_binding(env):
    pair, server, tmp = env
    ok(sipp(pair, "register.xml", user_lines=[auth_line("1004", expires=600)], port=5074,
            cwd=tmp), tmp)
    server.wait_for(lambda rows: any(r.aor.startswith("1004@") for r in rows), 2)
    ok(sipp(pair, "register.xml", user_lines=[auth_line("1004", expires=1200)], port=5074,
            cwd=tmp), tmp)
    server.wait_for(lambda rows: [r.expires_in > 600 for r in rows
                                  if r.aor.startswith("1004@")] == [True], 2)


def test_unregister_removes_the_binding(env):
    pair, server, tmp = env
    ok(sipp(pair, "register.xml", user_lines=[auth_line("1005")], port=5075, cwd=tmp), tmp)
    server.wait_for(lambda rows: any(r.aor.startswith("1005@") for r in rows), 2)
    ok(sipp(pair, "register.xml", user_lines=[auth_line("1005", expires=0)], port=5075,
            cwd=tmp), tmp)
    server.wait_for(lambda rows: not any(r.aor.startswith("1005@") for r in rows), 2)


def test_wrong_password_and_unknown_user_get_401_again(env):
    pair, server, tmp = env
    ok(sipp(pair, "register_rejected.xml", port=5076, cwd=tmp,
            user_lines=[auth_line("1006", password="wrong"), auth_line("9999")]), tmp)
    assert not [r for r in server.endpoints() if r.aor.split("@")[0] in ("1006", "9999")]


def test_invite_redirects_online_and_rejects_unregistered_and_unknown(env):
    pair, server, tmp = env
    ok(sipp(pair, "register.xml", user_lines=[auth_line("1002")], port=5072, cwd=tmp), tmp)
    for callee, status in (("1002", 302), ("1003", 480), ("nobody", 404)):
        ok(sipp(pair, invite_scenario(tmp, status), user_lines=[invite_line(callee)],
                port=5080, cwd=tmp), tmp)
    # The 302 carries the registered contact.
    sock = udp_socket(pair.client_ns, CLIENT_IP)
    try:
        caller = Uac("1009", "secret1009", f"{SERVER_IP}:5060",
                     f"{CLIENT_IP}:{sock.getsockname()[1]}")
        challenge = exchange(sock, caller.invite("1002"), (SERVER_IP, 5060))
        assert challenge.status == 401  # nothing about the callee without credentials
        moved = exchange(sock, caller.invite("1002", cseq=2, authorization=caller
                                             .authorize_invite(challenge, "1002")),
                         (SERVER_IP, 5060))
    finally:
        sock.close()
    assert moved.status == 302
    assert [c.uri for c in moved.contacts] == [f"sip:1002@{CLIENT_IP}:5072;transport=UDP"]


def test_register_over_tcp(env):
    pair, server, tmp = env
    ok(sipp(pair, "register.xml", user_lines=[auth_line("1007")], port=5077, transport="t1",
            cwd=tmp), tmp)
    server.wait_for(lambda rows: [r.source for r in rows if r.aor.startswith("1007@")]
                    == [f"tcp:{CLIENT_IP}:5077"], 2)


def test_concurrent_registrations_all_succeed(env):
    pair, server, tmp = env
    users = [auth_line(u) for u in ("1001", "1002", "1003", "1008", "1010")] * 40
    ok(sipp(pair, "register.xml", user_lines=users, port=5078, rate=100, cwd=tmp), tmp)


def test_endpoints_command_while_running(env):
    _, server, _ = env
    out = subprocess.run([PYTHON, "-m", "floodguard.registrar.commands", "endpoints", "-c",
                          str(server.config), "--json"], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    rows = json.loads(out)
    assert any(r["aor"] == f"1001@{SERVER_IP}" and r["status"] == "online" for r in rows)


def test_restart_keeps_bindings_and_acknowledged_ones_are_flushed(env):
    pair, server, tmp = env
    sock = udp_socket(pair.client_ns, CLIENT_IP)
    try:
        uac = Uac("1010", "secret1010", f"{SERVER_IP}:5060",
                  f"{CLIENT_IP}:{sock.getsockname()[1]}")
        challenge = exchange(sock, uac.register(expires=900), (SERVER_IP, 5060))
        done = exchange(sock, uac.register(expires=900, authorization=uac.authorize(challenge)),
                        (SERVER_IP, 5060))
        assert done.status == 200
        assert server.stop() == 0  # at once: the binding must be written on SIGTERM
    finally:
        sock.close()
    before = {r.contact: r for r in server.endpoints()}
    assert uac.contact in before
    server.start()
    after = {r.contact: r for r in server.endpoints()}
    assert set(after) == set(before)
    assert 880 <= after[uac.contact].expires_in <= 900
    ok(sipp(pair, invite_scenario(tmp, 302), user_lines=[invite_line("1010")], port=5080,
            cwd=tmp), tmp)
