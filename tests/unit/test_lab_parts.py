"""Pure parts of the lab's generators and sampler: packets, word lists, counters parsing."""

from __future__ import annotations

import socket
import struct

import pytest

from floodguard.lab import attacks, botnet, sampler, sip
from floodguard.lab.topology import botnet_addresses, phone_address
from floodguard.sip.message import parse_message


def test_spoofed_datagram_has_valid_headers() -> None:
    payload = b"REGISTER sip:x SIP/2.0\r\n\r\n"
    packet = attacks.spoofed_datagram("10.210.0.1", "10.200.0.1", 5060, 5060, payload)
    header = packet[:20]
    assert header[0] == 0x45 and header[9] == socket.IPPROTO_UDP
    assert struct.unpack("!H", header[2:4])[0] == len(packet)
    assert botnet.ip_checksum(header[:10] + b"\0\0" + header[12:]) == \
        struct.unpack("!H", header[10:12])[0]
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert total == 0xFFFF  # the checksum verifies
    assert socket.inet_ntoa(header[12:16]) == "10.210.0.1"
    assert struct.unpack("!HHHH", packet[20:28])[2] == 8 + len(payload)
    assert packet[28:] == payload


def test_botnet_packets_keep_their_length_and_parse() -> None:
    sources = botnet_addresses(3)
    assert sources == ["10.210.0.1", "10.210.0.2", "10.210.0.3"]
    for head, tail in attacks.botnet_packets(sources, "10.200.0.1", 60):
        packet = head + b"%08x" % 12345 + tail
        assert struct.unpack("!H", packet[2:4])[0] == len(packet)
        msg = parse_message(packet[28:])
        assert msg.method == "REGISTER" and msg.authorization is not None
        assert msg.via_branch == "z9hG4bKbot00003039"


def test_guess_list_holds_the_real_password_at_crack_at() -> None:
    words = list(attacks.guesses("10000", 40))
    assert len(words) == 40
    assert words[attacks.CRACK_AT - 1] == sip.password("10000")
    assert words.count(sip.password("10000")) == 1


def test_pacer_skips_instead_of_bursting_after_a_stall() -> None:
    pacer = attacks.Pacer(10000.0, 10.0)
    pacer.start -= 1.0  # as if descheduled for a second
    due = pacer.due()
    assert 0 < due <= attacks.Pacer.BATCH
    assert pacer.skipped > 9000


def test_accounts_and_addresses() -> None:
    assert phone_address(0) == "10.201.0.10" and phone_address(246) == "10.201.1.0"
    text = sip.accounts_toml(["10000", "10001"])
    assert text.count("[[account]]") == 3 and 'password = "lab10001pw"' in text
    assert sip.password(sip.ATTACKER_USER) == sip.ATTACKER_PASSWORD


def test_sampler_classifies_floodguard_rules_by_layer() -> None:
    rules = [
        {"rule": "-p udp -m udp --dport 5060 -m set --match-set floodguard-ban src -j DROP",
         "packets": 4},
        {"rule": '-m string --string "friendly-scanner" --algo bm --icase -j DROP', "packets": 7},
        {"rule": '-m string --string "REGISTER sip" --algo bm --to 160 --icase -m hashlimit '
                 "--hashlimit-above 5/sec --hashlimit-burst 10 --hashlimit-mode srcip "
                 "--hashlimit-name fg-reg-12345678 -j DROP", "packets": 11},
        {"rule": "-m hashlimit --hashlimit-above 20/sec --hashlimit-name fg-sip-1 -j DROP",
         "packets": 2},
        {"rule": "-m set ! --match-set floodguard-known src -m hashlimit --hashlimit-above "
                 "400/sec --hashlimit-name fg-bud-1 -j DROP", "packets": 100},
        {"rule": "-m set ! --match-set floodguard-known src -m set --match-set "
                 'floodguard-challenged src -m string --string "fg1." --algo bm -m hashlimit '
                 "--hashlimit-above 400/sec --hashlimit-name fg-pro-1 -j DROP", "packets": 3},
        {"rule": "-j NFQUEUE --queue-num 0 --queue-bypass", "packets": 1000},
    ]
    drops = sampler.kernel_drops(rules)
    assert drops["ban"] == 4 and drops["scanner"] == 7 and drops["register-limit"] == 11
    assert drops["sip-limit"] == 2 and drops["budget"] == 100 and drops["token-class"] == 3
    assert sum(drops.values()) == 127


def test_sampler_parses_its_counting_chains() -> None:
    text = "\n".join([
        "*security",
        ":INPUT ACCEPT [0:0]",
        ":FGLAB-REACH - [0:0]",
        "[5:500] -A INPUT -j FGLAB-REACH",
        "[3:300] -A FGLAB-REACH -s 10.202.0.0/16 -p udp -m udp --dport 5060 -m comment "
        "--comment attackers -j RETURN",
        "[9:900] -A FGLAB-REACH -s 10.210.0.0/15 -p udp -m udp --dport 5060 -m comment "
        "--comment botnet -j RETURN",
        "[2:200] -A FGLAB-REACH -s 10.201.0.0/16 -p udp -m udp --dport 5060 -m comment "
        "--comment phones -j RETURN",
        "[4:400] -A FGLAB-REACH -s 10.203.0.1/32 -p udp -m udp --sport 40000:49999 --dport "
        "5060 -m comment --comment office-attackers -j RETURN",
        "[6:600] -A FGLAB-REACH -s 10.203.0.1/32 -p udp -m udp --dport 5060 -m comment "
        '--comment "office" -j RETURN',
        "COMMIT",
    ])
    assert sampler.parse_reach(text) == {"attackers": 3, "botnet": 9, "phones": 2,
                                         "office-attackers": 4, "office": 6}
    # the rules the sampler installs are the ones it parses, in that order
    names = [rule[rule.index("--comment") + 1] for rule in sampler.reach_rules()]
    assert names == list(sampler.REACH_RULES)
    sent = "[42:4200] -A FGLAB-SENT -p udp -m udp --dport 5060 -j RETURN\n[7:7] -A OUTPUT -j X"
    assert sampler.parse_sent(sent) == 42


def test_guard_verdicts_sum_the_workers_snapshots(tmp_path) -> None:
    from floodguard.lab.host import guard_verdicts
    from floodguard.store import Store

    db = tmp_path / "state.db"
    assert guard_verdicts(db) is None
    store = Store(db)
    store.save_snapshot("engine-0", {"verdicts": {"accept": 99}})
    store.db.commit()
    assert store.snapshot_names("counters-") == []
    store.close()
    assert guard_verdicts(db) is None  # no worker published counters
    store = Store(db)
    store.save_snapshot("counters-0", {"verdicts": {"accept": 3, "drop:ban": 1}})
    store.save_snapshot("counters-1", {"verdicts": {"accept": 2}})
    store.db.commit()
    assert store.snapshot_names("counters-") == ["counters-0", "counters-1"]
    assert store.snapshot_names() == ["counters-0", "counters-1", "engine-0"]
    store.close()
    assert guard_verdicts(db) == {"accept": 5, "drop:ban": 1}


@pytest.mark.parametrize("kind", sorted(botnet.PAYLOADS))
def test_every_botnet_variant_keeps_its_length_and_is_what_it_says(kind: str) -> None:
    packets = botnet.botnet_packets(botnet_addresses(4), "10.200.0.1", 60, kind)
    assert len(packets) == 4
    for i, (head, tail) in enumerate(packets):
        packet = head + b"%08x" % 7 + tail
        assert struct.unpack("!H", packet[2:4])[0] == len(packet)
        assert struct.unpack("!HHHH", packet[20:28])[2] == len(packet) - 20
        if kind == "botnet-junk":
            assert not packet[28:].startswith((b"REGISTER", b"OPTIONS", b"SIP/2.0"))
            continue
        msg = parse_message(packet[28:])
        assert msg.via_branch == "z9hG4bKbot00000007"
        if kind == "botnet-options":
            assert msg.method == "OPTIONS"
        else:
            assert msg.method == "REGISTER"
            assert (msg.authorization is not None) == (kind in ("botnet", "botnet-token"))
            # the forged variant: every other source carries the guard's public token prefix
            assert (b'opaque="fg1.' in packet) == (kind == "botnet-token" and i % 2 == 0)


def test_baseline_rules() -> None:
    from floodguard.lab import baselines

    guides = baselines.rules("guides")
    assert len(guides) == 4 and all(t == "filter" and c == "INPUT" for t, c, _ in guides)
    assert any("friendly-scanner" in spec for _, _, spec in guides)
    assert baselines.rules("drop-spoofed") == [
        ("raw", "PREROUTING", ["-s", "10.210.0.0/15", "-j", "DROP"])]
    assert baselines.rules("none") == baselines.rules("floodguard") == []
    with pytest.raises(ValueError):
        baselines.rules("nope")
