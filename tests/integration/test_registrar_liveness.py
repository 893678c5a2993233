"""Liveness against a real endpoint: a SIPp UAS that answers OPTIONS keeps its binding online;
stopped, it is marked offline within time_to_live + the retransmission schedule and INVITEs get
480 at once; answering again, or re-registering, brings it back."""

import json
import signal
import sqlite3
import subprocess
import time

import pytest

from .registrar_helpers import (
    ASSETS,
    CLIENT_IP,
    auth_line,
    invite_line,
    invite_scenario,
    registrar_env,
    sipp,
    sipp_error,
)

pytestmark = pytest.mark.root("ip", "sipp")

TTL = 2
GIVE_UP = 4.0  # sends at 0, 0.5, 1.5, 3.5 s
BOUND = TTL + GIVE_UP + 1.0  # + housekeeping tick, write-behind flush and polling slack
PHONE_PORT = 5090


class Uas:
    """sipp -sf uas_options.xml on the phone's port in the client namespace."""

    def __init__(self, pair, cwd) -> None:
        self.pair, self.cwd = pair, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.pair.client_ns, "sipp", "-sf",
             str(ASSETS / "uas_options.xml"), "-i", CLIENT_IP, "-p", str(PHONE_PORT),
             "-nostdin", "-bind_local"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.cwd)
        time.sleep(0.3)
        assert self.proc.poll() is None, "sipp UAS did not start"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # an unplugged phone says goodbye to no one
            self.proc.wait(5)
        self.proc = None


def phone(server):
    rows = [r for r in server.endpoints() if r.aor.startswith("1001@")]
    assert len(rows) <= 1
    return rows[0] if rows else None


def test_offline_endpoint_gets_480_and_comes_back(tmp_path):
    with registrar_env(tmp_path, time_to_live=TTL) as (pair, server):
        uas = Uas(pair, tmp_path)
        try:
            register = sipp(pair, "register.xml", user_lines=[auth_line("1001")],
                            port=PHONE_PORT, cwd=tmp_path)
            assert register.returncode == 0, sipp_error(register, tmp_path)
            uas.start()
            # Answering OPTIONS: stays online and last seen keeps moving.
            time.sleep(TTL * 2 + 0.5)
            row = phone(server)
            assert row.online and row.last_seen > time.time() - TTL - 1.5

            uas.stop()
            took = server.wait_for(lambda rows: phone(server) and not phone(server).online,
                                   timeout=BOUND + 2)
            assert took <= BOUND, f"offline after {took:.1f} s, bound {BOUND} s"
            assert phone(server).expires_in > 3000  # offline, yet still registered
            invite = sipp(pair, invite_scenario(tmp_path, 480), user_lines=[invite_line("1001")],
                          port=5091, cwd=tmp_path)
            assert invite.returncode == 0, sipp_error(invite, tmp_path)

            # A later check answered: online again.
            uas.start()
            server.wait_for(lambda rows: phone(server).online, timeout=TTL + 2)
            uas.stop()
            server.wait_for(lambda rows: not phone(server).online, timeout=BOUND + 2)

            # Re-registering brings it back at once, with nobody answering OPTIONS.
            register = sipp(pair, "register.xml", user_lines=[auth_line("1001")],
                            port=PHONE_PORT, cwd=tmp_path)
            assert register.returncode == 0, sipp_error(register, tmp_path)
            server.wait_for(lambda rows: phone(server).online, timeout=1)
            invite = sipp(pair, invite_scenario(tmp_path, 302), user_lines=[invite_line("1001")],
                          port=5091, cwd=tmp_path)
            assert invite.returncode == 0, sipp_error(invite, tmp_path)
            # the probe counts reach status and metrics through the database
            time.sleep(1.2)
            with sqlite3.connect(server.db) as db:
                row = db.execute("SELECT value FROM reg_meta WHERE key = 'liveness'").fetchone()
            probes = json.loads(row[0])
            assert probes["sent"] >= 3 and probes["answers"] >= 2 and probes["timeouts"] >= 2
        finally:
            uas.stop()
