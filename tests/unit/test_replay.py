"""Offline replay of a capture through the guard's policy (captures written by scapy: classic
pcap and pcapng; tests/integration/test_replay_dumpcap.py replays dumpcap's)."""

import json

import pytest
from click.testing import CliRunner
from scapy.layers.inet import ICMP, IP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap, wrpcapng

from floodguard.capture import Capture, PcapError
from floodguard.cli import main
from floodguard.config import Config
from floodguard.replay import replay
from tests.sipmsg import auth_value, register, response, udp

SERVER = "192.0.2.10"
CLIENT = "198.51.100.7"


def brute_force_capture(path, rounds=6, link="ether", office=False, pcapng=False, noise=False):
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
    if noise:  # what a capture without a filter holds beside SIP
        packets += [bytes(IP(src=CLIENT, dst=SERVER) / ICMP()),
                    udp(CLIENT, SERVER, 40000, 53, b"\0" * 12),
                    udp(CLIENT, SERVER, 5062, 5060, b"REGISTER")[:24]]
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
    (wrpcapng if pcapng else wrpcap)(str(path), frames)


@pytest.mark.parametrize("pcapng", [False, True], ids=["pcap", "pcapng"])
def test_replay_finds_the_suspension_with_its_time(tmp_path, pcapng):
    path = tmp_path / "bf.pcap"
    brute_force_capture(path, pcapng=pcapng)
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


def test_packets_the_rules_never_queue_are_not_judged(tmp_path):
    """ICMP, UDP between other ports, a cut IP packet: the kernel rules never queue them to
    the guard, so the replay reads them but does not judge them."""
    path = tmp_path / "noisy.pcap"
    brute_force_capture(path, noise=True)
    report = replay(Config(), path)
    assert (report.packets, report.sip_packets) == (27, 24)
    assert not [k for k in report.verdicts if "malformed" in k], report.verdicts
    assert len(report.decisions) == 1


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
    assert bad.exit_code == 4 and "not a pcap or pcapng file" in bad.output
    missing = CliRunner().invoke(main, ["replay", str(tmp_path / "none.pcap")])
    assert missing.exit_code == 4


@pytest.mark.parametrize("pcapng", [False, True], ids=["pcap", "pcapng"])
def test_truncated_capture_is_replayed_up_to_the_cut_with_a_warning(tmp_path, pcapng):
    path = tmp_path / "bf.pcap"
    brute_force_capture(path, pcapng=pcapng)
    data = path.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[: len(data) - 30])
    with open(cut, "rb") as handle:
        capture = Capture(handle)
        assert len(list(capture)) == 23 and "cut short" in (capture.truncated or "")
    report = replay(Config(), cut)
    assert report.packets == 23 and report.truncated == capture.truncated
    result = CliRunner().invoke(main, ["replay", str(cut), "--json"])
    assert result.exit_code == 0 and "warning:" in result.stderr and "cut short" in result.stderr
    assert json.loads(result.stdout)["truncated"] == capture.truncated
    whole = CliRunner().invoke(main, ["replay", str(path), "--json"])
    assert whole.stderr == "" and json.loads(whole.stdout)["truncated"] is None
    with open(path, "rb") as handle:
        handle.read(1)  # a reader that does not start at the file's header
        with pytest.raises(PcapError, match="not a pcap"):
            list(Capture(handle))
