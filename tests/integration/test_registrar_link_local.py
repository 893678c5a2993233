"""A phone on an IPv6 link-local address registers with the real registrar: the source keeps
its interface (fe80::...%dev, as socket.recvfrom writes it) and every answer goes back through
that interface (floodguard/registrar/_udp.c reads and writes the scope)."""

import socket
import time

import pytest

from floodguard.registrar.uac import Uac

from .registrar_helpers import (
    SERVER_IP,
    exchange,
    host_port,
    in_netns,
    registrar_env,
    run,
    udp_socket,
)

pytestmark = pytest.mark.root("ip")

SERVER_LL, CLIENT_LL = "fe80::77:1", "fe80::77:2"


def test_a_link_local_phone_registers_through_its_interface(tmp_path):
    with registrar_env(tmp_path, listen=[f"{SERVER_IP}:5060", "[::]:5060"]) as (pair, server):
        for ns, dev, addr in ((pair.server_ns, pair.server_dev, SERVER_LL),
                              (pair.client_ns, pair.client_dev, CLIENT_LL)):
            run("ip", "-n", ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad")
        sock = udp_socket(pair.client_ns, "::")  # the kernel picks a link-local source
        try:
            port = sock.getsockname()[1]
            scope = in_netns(pair.client_ns, socket.if_nametoindex, pair.client_dev)
            dest = (SERVER_LL, 5060, 0, scope)
            uac = Uac("1001", "secret1001", f"[{SERVER_LL}]:5060", host_port(CLIENT_LL, port))
            challenge = exchange(sock, uac.register(), dest)
            assert challenge.status == 401
            ok = exchange(sock, uac.register(authorization=uac.authorize(challenge)), dest)
            assert ok.status == 200 and [c.uri for c in ok.contacts] == [uac.contact]
        finally:
            sock.close()
        deadline = time.monotonic() + 5
        while not server.endpoints() and time.monotonic() < deadline:
            time.sleep(0.1)
        [row] = server.endpoints()
        assert row.source.startswith("udp:[fe80::")
        assert row.source.endswith(f"%{pair.server_dev}]:{port}")
