"""TCP reassembly: every message judged exactly once whatever the segmentation; bounded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from floodguard.packet import ACK, RST, SYN
from floodguard.tcpflow import FlowTable
from tests.sipmsg import register

KEY = ("198.51.100.7", 40000, "192.0.2.10", 5060)
ISN = 2**32 - 50  # sequence numbers wrap inside the stream


def stream(n: int) -> tuple[bytes, list[str]]:
    calls = [f"call-{i}" for i in range(n)]
    return b"".join(b"\r\n" * (i % 2) + register("1001", src="198.51.100.7", call_id=c, cseq=1)
                    for i, c in enumerate(calls)), calls


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.data())
def test_any_segmentation_with_retransmissions_frames_each_message_once(
        n: int, data: st.DataObject) -> None:
    raw, calls = stream(n)
    table = FlowTable()
    assert table.inbound(0.0, KEY, ISN, SYN, b"") == ("ok", [])
    seen: list[str] = []
    pos = 0
    while pos < len(raw):
        size = data.draw(st.integers(1, 700))
        chunk = raw[pos:pos + size]
        status, msgs = table.inbound(1.0, KEY, (ISN + 1 + pos) % 2**32, ACK, chunk)
        assert status == "ok"
        seen += [m.call_id for m in msgs]
        if data.draw(st.booleans()):  # the same bytes again, or an older overlapping piece
            back = data.draw(st.integers(0, pos))
            again = raw[back:pos + len(chunk)]
            assert table.inbound(1.0, KEY, (ISN + 1 + back) % 2**32, ACK, again) == ("ok", [])
        pos += len(chunk)
    assert seen == calls


def test_a_registrar_ack_releases_the_compare_buffer_and_old_data_is_ignored() -> None:
    raw, _ = stream(2)
    table = FlowTable()
    table.inbound(0.0, KEY, 0, SYN, b"")
    assert len(table.inbound(0.0, KEY, 1, ACK, raw)[1]) == 2
    held = table.bytes
    assert held >= len(raw)
    table.outbound(0.0, KEY, 7000, 1 + len(raw), ACK, b"")
    assert table.bytes == held - len(raw)
    # acknowledged bytes come back with other content: the registrar's stack discards them
    assert table.inbound(0.0, KEY, 1, ACK, b"X" * len(raw)) == ("ok", [])


def test_answers_are_framed_across_segments() -> None:
    table = FlowTable()
    table.inbound(0.0, KEY, 0, SYN, b"")
    table.outbound(0.0, KEY, 99, 1, SYN | ACK, b"")
    answer = (b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/TCP x;branch=z9hG4bK1\r\n"
              b"Call-ID: " + b"c" * 900 + b"\r\nCSeq: 1 REGISTER\r\n"
              b'WWW-Authenticate: Digest realm="r", nonce="n"\r\nContent-Length: 0\r\n\r\n')
    got = []
    for off in range(0, len(answer), 536):  # MSS 536 splits the 401
        got += table.outbound(0.0, KEY, 100 + off, 1, ACK, answer[off:off + 536])
    assert [m.status for m in got] == [401] and got[0].challenges[0].nonce == "n"


def test_malformed_data_cuts_the_flow_and_rst_forgets_it() -> None:
    table = FlowTable()
    table.inbound(0.0, KEY, 0, SYN, b"")
    status, _ = table.inbound(0.0, KEY, 1, ACK, b"REGISTER sip:x SIP/2.0\r\nCall-ID: a\rb\r\n\r\n")
    assert status == "drop:malformed:control_char"
    assert table.inbound(0.0, KEY, 60, ACK, b"more")[0] == "drop:tcp-cut"
    table.inbound(0.0, KEY, 61, RST, b"")
    assert len(table) == 0 and table.bytes == 0


def test_a_flow_seen_mid_stream_is_read_from_a_message_start() -> None:
    raw, calls = stream(2)
    table = FlowTable()
    first = len(register("1001", src="198.51.100.7", call_id="call-0", cseq=1))
    status, msgs = table.inbound(0.0, KEY, 500, ACK, raw[10:first])  # no SYN seen
    assert status == "ok:resync" and msgs == []
    status, msgs = table.inbound(0.0, KEY, 500 + first - 10, ACK, raw[first:])
    assert status == "ok" and [m.call_id for m in msgs] == calls[1:]


def test_tables_stay_bounded_under_a_flood_of_flows() -> None:
    table = FlowTable(max_flows=1000, max_bytes=200_000)
    half = register("1001", src="198.51.100.7", call_id="x", cseq=1)[:300]
    for i in range(20_000):
        key = (f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 40000, "192.0.2.10", 5060)
        table.inbound(0.0, key, 0, SYN, b"")
        table.inbound(0.0, key, 1, ACK, half)  # an unfinished message held in every flow
    assert len(table) <= 1000 and table.bytes <= 200_000
    assert table.evicted >= 19_000
    assert table.bytes == sum(f.size() for f in table._flows.values())


def test_idle_flows_expire() -> None:
    table = FlowTable(idle=10.0)
    table.inbound(0.0, KEY, 0, SYN, b"")
    raw, _ = stream(1)
    assert table.inbound(5.0, KEY, 1, ACK, raw[:40]) == ("ok", [])  # known: appended
    assert table.inbound(30.0, KEY, 41, ACK, raw[40:60])[0] == "ok:resync"  # forgotten
