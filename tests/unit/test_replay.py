"""Offline replay of a capture through the guard's policy."""

import json

import pytest
from click.testing import CliRunner
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from floodguard.cli import main
from floodguard.config import Config
from floodguard.replay import PcapError, read_pcap, replay
from tests.sipmsg import auth_value, register, response, udp

SERVER = "192.0.2.10"
CLIENT = "198.51.100.7"


def brute_force_capture(path, rounds=6, link="ether", office=False):
    frames = []
    t = 1_700_000_000.0
    packets = []
    if office:  # another phone behind the same address registers first: a known-good pair
        packets = [
            udp(CLIENT, SERVER, 5060, 5060, register("1002", src=CLIENT, call_id="ok", cseq=1)),
            udp(SERVER, CLIENT, 5060, 5060, response(401, "Unauthorized", "1002", call_id="ok",
                                                     cseq=1, challenge_nonce="good")),
            udp(CLIENT, SERVER, 5060, 5060, register("1002", src=CLIENT, call_id="ok", cseq=2,
                                                     auth=auth_value("1002", "pw", "good"))),
            udp(SERVER, CLIENT, 5060, 5060, response(200, "OK", "1002", call_id="ok", cseq=2,
                                                     expires=3600)),
        ]
    for raw in packets:
        t += 0.05
        pkt = IP(raw)
        if link == "ether":
            pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt
        pkt.time = t
        frames.append(pkt)
    for i in range(rounds):
        nonce = f"n{i}"
        packets = [
            udp(CLIENT, SERVER, 5060, 5060, register("1001", src=CLIENT, call_id=f"c{i}", cseq=1)),
            udp(SERVER, CLIENT, 5060, 5060, response(401, "Unauthorized", "1001", call_id=f"c{i}",
                                                     cseq=1, challenge_nonce=nonce)),
            udp(CLIENT, SERVER, 5060, 5060, register("1001", src=CLIENT, call_id=f"c{i}", cseq=2,
                                                     auth=auth_value("1001", "bad", nonce))),
            udp(SERVER, CLIENT, 5060, 5060, response(401, "Unauthorized", "1001", call_id=f"c{i}",
                                                     cseq=2, challenge_nonce=nonce + "x")),
        ]
        for raw in packets:
            t += 0.05
            pkt = IP(raw)
            if link == "ether":
                pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / pkt
            pkt.time = t
            frames.append(pkt)
    wrpcap(str(path), frames)


def test_replay_finds_the_suspension_with_its_time(tmp_path):
    path = tmp_path / "bf.pcap"
    brute_force_capture(path)
    report = replay(Config(), path)
    assert report.packets == 24
    assert [(d.ip, d.kind, d.failures, d.seconds) for d in report.decisions] == [
        (CLIENT, "suspend", 6, 180)]
    assert abs(report.decisions[0].offset - 1.15) < 0.01


def test_replay_of_a_shared_address_suspends_the_endpoint_only(tmp_path):
    path = tmp_path / "office.pcap"
    brute_force_capture(path, office=True)
    (decision,) = replay(Config(), path).decisions
    assert (decision.ip, decision.kind, decision.scope, decision.seconds) == (
        CLIENT, "suspend", "aor", 180)
    assert decision.aor is not None and decision.aor.startswith("1001@")


def test_raw_ip_link_type_and_fewer_failures(tmp_path):
    path = tmp_path / "raw.pcap"
    brute_force_capture(path, rounds=5, link="raw")
    assert replay(Config(), path).decisions == []


def test_cli_json_and_bad_files(tmp_path):
    path = tmp_path / "bf.pcap"
    brute_force_capture(path)
    result = CliRunner().invoke(main, ["replay", str(path), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["decisions"][0]["ip"] == CLIENT
    text = CliRunner().invoke(main, ["replay", str(path)])
    assert "suspend" in text.output and CLIENT in text.output
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture at all")
    bad = CliRunner().invoke(main, ["replay", str(junk)])
    assert bad.exit_code == 4 and "not a pcap file" in bad.output
    missing = CliRunner().invoke(main, ["replay", str(tmp_path / "none.pcap")])
    assert missing.exit_code == 4


def test_truncated_capture_stops_cleanly(tmp_path):
    path = tmp_path / "bf.pcap"
    brute_force_capture(path)
    data = path.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 30])
    with open(cut, "rb") as handle:
        assert len(list(read_pcap(handle))) == 23
    with open(tmp_path / "bf.pcap", "rb") as handle:
        handle.read(1)  # a reader that does not start at the file's header
        with pytest.raises(PcapError, match="not a pcap"):
            list(read_pcap(handle))
