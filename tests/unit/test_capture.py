"""The capture readers (floodguard.capture): pcapng block by block, classic pcap, bad files.

The pcapng files here are written block by block after the specification (draft-ietf-opsawg-
pcapng) by the small writer below, so each case says exactly which bytes it holds; test_replay.py
reads scapy's pcapng files and tests/integration/test_replay_dumpcap.py dumpcap's.
"""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from floodguard.capture import MAX_BLOCK, Capture, PcapError
from tests.sipmsg import register, udp

SHB, IDB, SPB, NRB, ISB, EPB = 0x0A0D0D0A, 1, 3, 4, 5, 6
ETHERNET, SLL2, IPV4, RAW = 1, 276, 228, 101
T0 = 1_700_000_000

CLIENT, SERVER = "198.51.100.7", "192.0.2.10"
PACKETS = [udp(CLIENT, SERVER, 5060 + i, 5060,
               register("1001", src=CLIENT, call_id=f"c{i}", cseq=i)) for i in range(6)]


# ---------------------------------------------------------------- a pcapng writer


def pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def block(order: str, kind: int, body: bytes, length: int | None = None,
          trailer: int | None = None) -> bytes:
    body = pad(body)
    size = 12 + len(body)
    return (struct.pack(order + "II", kind, size if length is None else length) + body
            + struct.pack(order + "I", size if trailer is None else trailer))


def options(order: str, *pairs: tuple[int, bytes]) -> bytes:
    out = b"".join(struct.pack(order + "HH", code, len(value)) + pad(value)
                   for code, value in pairs)
    return out + struct.pack(order + "HH", 0, 0)


def shb(order: str, major: int = 1, magic: int = 0x1A2B3C4D) -> bytes:
    body = struct.pack(order + "IHHq", magic, major, 0, -1)
    return block(order, SHB, body + options(order, (4, b"floodguard tests")))


def idb(order: str, link: int, *opts: tuple[int, bytes], snaplen: int = 262144) -> bytes:
    return block(order, IDB, struct.pack(order + "HHI", link, 0, snaplen)
                 + (options(order, *opts) if opts else b""))


def epb(order: str, iface: int, ticks: int, data: bytes, captured: int | None = None) -> bytes:
    head = struct.pack(order + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF,
                       len(data) if captured is None else captured, len(data))
    return block(order, EPB, head + data + options(order, (1, b"a comment")))


def spb(order: str, data: bytes) -> bytes:
    return block(order, SPB, struct.pack(order + "I", len(data)) + data)


def ether(packet: bytes, ethertype: int = 0x0800) -> bytes:
    return b"\x02" * 6 + b"\x04" * 6 + ethertype.to_bytes(2, "big") + packet


def sll2(packet: bytes) -> bytes:
    return b"\x08\x00" + b"\0" * 18 + packet


def sample(order: str) -> list[tuple[bytes, list[tuple[float, bytes]]]]:
    """Two sections (the second in the other byte order), interfaces with three link types and
    three timestamp resolutions, every packet block type, blocks to skip: each block with the
    (timestamp, IP packet) pairs it holds."""
    other = ">" if order == "<" else "<"
    return [
        (shb(order), []),
        (idb(order, ETHERNET), []),  # default resolution: microseconds
        (idb(order, RAW, (9, b"\x09"), (14, struct.pack(order + "q", 100))), []),  # ns, +100 s
        (idb(order, SLL2, (2, b"any"), (9, b"\x8a")), []),  # 2^-10 s
        (block(order, NRB, b"\x01\x00\x04\x00\xc0\x00\x02\x0ahost\0\0\0\0\0"), []),
        (epb(order, 0, T0 * 10**6 + 250_000, ether(PACKETS[0])), [(T0 + 0.25, PACKETS[0])]),
        (epb(order, 1, (T0 - 100) * 10**9 + 500_000_000, PACKETS[1]), [(T0 + 0.5, PACKETS[1])]),
        (epb(order, 0, T0 * 10**6 + 600_000, ether(b"\0" * 28, 0x0806)), []),  # ARP: left out
        (epb(order, 2, T0 * 1024 + 768, sll2(PACKETS[2])), [(T0 + 0.75, PACKETS[2])]),
        # no timestamp in a simple packet block: the one before it stands in
        (spb(order, ether(PACKETS[3])), [(T0 + 0.75, PACKETS[3])]),
        (block(order, ISB, struct.pack(order + "III", 0, 0, 0)), []),
        (block(order, 0x00000BAD, b"custom block"), []),
        (shb(other), []),
        (idb(other, IPV4), []),
        (epb(other, 0, (T0 + 1) * 10**6, PACKETS[4]), [(T0 + 1.0, PACKETS[4])]),
        (spb(other, PACKETS[5]), [(T0 + 1.0, PACKETS[5])]),
    ]


def joined(blocks: list[tuple[bytes, list[tuple[float, bytes]]]]) -> bytes:
    return b"".join(raw for raw, _ in blocks)


def read(data: bytes) -> tuple[list[tuple[float, bytes]], Capture]:
    capture = Capture(io.BytesIO(data))
    return list(capture), capture


# ---------------------------------------------------------------- pcapng


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_sections_interfaces_and_resolutions(order: str) -> None:
    blocks = sample(order)
    packets, capture = read(joined(blocks))
    assert packets == [pair for _, pairs in blocks for pair in pairs]
    assert capture.format == "pcapng" and capture.truncated is None


def test_every_cut_of_a_pcapng_yields_the_whole_packets_before_it() -> None:
    """A file cut anywhere: the packets of the whole blocks before the cut, and a note of the
    cut unless it falls between blocks."""
    blocks = sample("<")
    data = joined(blocks)
    ends, offset = [], 0
    for raw, _ in blocks:
        offset += len(raw)
        ends.append(offset)
    for cut in range(4, len(data)):
        packets, capture = read(data[:cut])
        assert packets == [pair for (_, pairs), end in zip(blocks, ends, strict=True)
                           if end <= cut for pair in pairs], cut
        assert (capture.truncated is None) == (cut in ends), (cut, capture.truncated)
        if capture.truncated is not None:
            assert "cut short" in capture.truncated


def corrupt_cases() -> list[tuple[str, bytes, str]]:
    o = "<"
    head = shb(o) + idb(o, ETHERNET)
    frame = ether(PACKETS[0])
    good = epb(o, 0, T0 * 10**6, frame)
    return [
        ("length not a multiple of 4", head + block(o, EPB, b"\0" * 24, length=38),
         "block length 38"),
        ("length under 12", head + struct.pack("<II", EPB, 8) + b"\0" * 16, "block length 8"),
        ("trailing length differs", head + block(o, EPB, good[8:-4], trailer=44), "at its end"),
        ("captured past its block", head + epb(o, 0, T0, frame, captured=len(frame) + 64),
         "runs past its block"),
        ("option past its block", shb(o) + block(o, IDB, struct.pack("<HHIHH", 1, 0, 0, 9, 200)),
         "option 9 of 200 bytes"),
        ("undeclared interface", head + epb(o, 3, T0, frame), "interface 3"),
        ("simple packet before any interface", shb(o) + spb(o, frame), "interface 0"),
        ("short enhanced packet block", head + block(o, EPB, b"\0" * 8), "too short"),
        ("short interface description", shb(o) + block(o, IDB, b"\0" * 4), "too short"),
        ("if_tsresol of two bytes", shb(o) + idb(o, ETHERNET, (9, b"\x06\x00")), "if_tsresol"),
        ("if_tsoffset of two bytes", shb(o) + idb(o, ETHERNET, (14, b"\0\0")), "if_tsoffset"),
        ("byte-order magic", shb(o, magic=0x12345678), "byte-order magic"),
        ("version 2", shb(o, major=2), r"version 2\.0"),
        ("unsupported link type", shb(o) + idb(o, 147), "unsupported link type 147"),
        ("huge block", head + struct.pack("<II", EPB, 0xFFFFFFF0) + b"\0" * 64, "at most"),
        ("huge section header", b"\x0a\x0d\x0d\x0a" + struct.pack("<II", 0xFFFFFFFC, 0x1A2B3C4D),
         "at most"),
        ("not a capture", b"GET / HTTP/1.1\r\n", "not a pcap or pcapng file"),
        ("empty", b"", "not a pcap or pcapng file"),
    ]


@pytest.mark.parametrize(("data", "message"), [c[1:] for c in corrupt_cases()],
                         ids=[c[0] for c in corrupt_cases()])
def test_corrupt_pcapng_is_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(PcapError, match=message):
        read(data)


# ---------------------------------------------------------------- classic pcap


def classic(tmp_path, nano: bool = False) -> bytes:
    frames = []
    for i, raw in enumerate(PACKETS):
        pkt = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(raw)
        pkt.time = T0 + i / 4
        frames.append(pkt)
    path = tmp_path / "c.pcap"
    wrpcap(str(path), frames, nano=nano)
    return path.read_bytes()


@pytest.mark.parametrize("nano", [False, True])
def test_classic_pcap_micro_and_nanoseconds(tmp_path, nano: bool) -> None:
    packets, capture = read(classic(tmp_path, nano))
    assert packets == [(T0 + i / 4, raw) for i, raw in enumerate(PACKETS)]
    assert capture.format == "pcap" and capture.truncated is None


def test_classic_pcap_huge_record_and_cut_header(tmp_path) -> None:
    data = classic(tmp_path)
    huge = data[:24] + struct.pack("<IIII", T0, 0, 0xFFFFFFFF, 0xFFFFFFFF) + data[40:]
    with pytest.raises(PcapError, match="at most"):
        read(huge)
    packets, capture = read(data[:10])
    assert packets == [] and "file header" in (capture.truncated or "")
    bad_link = data[:20] + struct.pack("<I", 147) + data[24:]
    with pytest.raises(PcapError, match="unsupported link type 147"):
        read(bad_link)


# ---------------------------------------------------------------- anything at all


class Recording(io.BytesIO):
    """A stream that remembers the largest read asked of it and how many reads there were."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.largest = self.reads = 0

    def read(self, size: int | None = -1) -> bytes:
        assert size is not None and size >= 0, "the reader must never read to the end"
        self.largest, self.reads = max(self.largest, size), self.reads + 1
        return super().read(size)


def mutations(base: bytes) -> st.SearchStrategy[bytes]:
    """The base file with some bytes changed, some 32-bit fields made huge, maybe cut."""
    edits = st.lists(st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)), max_size=6)
    huge = st.lists(st.tuples(st.integers(0, len(base) // 4 - 1),
                              st.integers(2**24, 2**32 - 1)), max_size=2)

    def apply(edit: list[tuple[int, int]], big: list[tuple[int, int]], cut: int) -> bytes:
        data = bytearray(base)
        for pos, value in edit:
            data[pos] = value
        for word, value in big:
            data[word * 4:word * 4 + 4] = value.to_bytes(4, "little")
        return bytes(data[:cut])

    return st.builds(apply, edits, huge, st.integers(0, len(base)))


PCAPNG = joined(sample("<"))


@settings(max_examples=400, deadline=None)
@given(mutations(PCAPNG))
def test_any_damage_to_a_pcapng_is_an_error_or_fewer_packets(data: bytes) -> None:
    """Never another exception, never a read past MAX_BLOCK, never a hang (reads are bounded by
    the file's size)."""
    stream = Recording(data)
    capture = Capture(stream)
    try:
        packets = list(capture)
    except PcapError:
        packets = []
    assert stream.largest <= MAX_BLOCK
    assert stream.reads <= len(data) // 6 + 4
    assert len(packets) <= len(data) // 16


def test_reads_stay_bounded_on_a_classic_pcap(tmp_path) -> None:
    data = classic(tmp_path)
    for word in range(6, len(data) // 4):  # every 32-bit field after the header made huge
        damaged = data[:word * 4] + b"\xff\xff\xff\x7f" + data[word * 4 + 4:]
        stream = Recording(damaged)
        try:
            list(Capture(stream))
        except PcapError as exc:
            assert "at most" in str(exc)
        assert stream.largest <= MAX_BLOCK
