"""Liveness: OPTIONS spread over the interval, RFC 3261 retransmissions, online/offline."""

import statistics
from collections import Counter

import pytest

from floodguard.registrar.bindings import Binding, BindingTable
from floodguard.registrar.liveness import Liveness
from floodguard.sip.message import parse_message

WALL = 1_800_000_000.0


class FakeSender:
    def __init__(self) -> None:
        self.sent: list[tuple[float, Binding, bytes]] = []
        self.now = 0.0
        self.reachable = True

    def local_address(self, binding):
        return ("192.0.2.1", 5060)

    def send(self, binding, data):
        self.sent.append((self.now, binding, data))
        return self.reachable


def make_binding(i: int, transport: str = "udp") -> Binding:
    return Binding(f"u{i}", f"sip:u{i}@192.0.2.50:{5000 + i}", "example.com", transport,
                   "192.0.2.50", 5000 + i, "udp:0.0.0.0:5060", f"c{i}", 1, WALL + 3600,
                   WALL, WALL, True)


def tracked(table: BindingTable, interval: float,
            transport: str = "udp") -> tuple[Liveness, FakeSender, Binding]:
    """A Liveness probing every ``interval`` s, tracking one binding (put in ``table``) since
    t=0; with the sender it probes through."""
    sender = FakeSender()
    live = Liveness(table, sender, interval)
    b = make_binding(1, transport)
    table.put(b)
    live.track(b.key, 0.0)
    return live, sender, b


@pytest.fixture
def table(tmp_path):
    t = BindingTable(tmp_path / "state.db", now=WALL)
    yield t
    t.db.close()


def answer(request: bytes) -> bytes:
    msg = parse_message(request)
    return (f"SIP/2.0 200 OK\r\nVia: {msg.via}\r\nFrom: {msg.header('from')}\r\n"
            f"To: {msg.header('to')};tag=x\r\nCall-ID: {msg.call_id}\r\nCSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n").encode()


def run(live: Liveness, sender: FakeSender, start: float, end: float, step: float = 0.1):
    t = start
    while t < end:
        sender.now = t
        live.tick(t, WALL + t)
        t = round(t + step, 6)


def test_probes_are_spread_evenly_over_the_interval(table):
    sender = FakeSender()
    live = Liveness(table, sender, 60)
    for i in range(10_000):
        b = make_binding(i)
        table.put(b)
        live.track(b.key, 0.0)
    sender.reachable = True
    run(live, sender, 0.0, 60.2)
    first_sends: dict[bytes, float] = {}
    for t, _, data in sender.sent:
        first_sends.setdefault(data, t)  # a retransmission repeats the same bytes
    per_second = Counter(int(t) for t in first_sends.values())
    assert len({b.key for _, b, _ in sender.sent}) == 10_000  # every binding got probed
    assert sum(per_second[s] for s in range(60)) <= 10_000  # at most once in the interval
    counts = [per_second.get(s, 0) for s in range(1, 60)]  # whole seconds inside it
    assert max(counts) - min(counts) <= 4
    assert statistics.pstdev(counts) < 2


def test_silent_udp_endpoint_goes_offline_after_the_retransmission_schedule(table):
    live, sender, b = tracked(table, 10)
    run(live, sender, 0.0, 20.0, step=0.05)
    first = sender.sent[0][0]
    offsets = [round(t - first, 2) for t, _, _ in sender.sent[:4]]
    assert offsets == [0.0, 0.5, 1.5, 3.5]
    assert not b.online
    assert live.timeouts >= 1


def test_offline_within_the_bound_and_back_on_answer(table):
    live, sender, b = tracked(table, 2)
    run(live, sender, 0.0, 2.0 + 4.0 + 0.2)  # interval + give-up
    assert not b.online
    # The endpoint answers the next probe: online again, last_seen updated.
    run(live, sender, 6.2, 8.5)
    request = sender.sent[-1][2]
    assert live.on_response(parse_message(answer(request)), 8.5, WALL + 8.5)
    assert b.online and b.last_seen == WALL + 8.5


def test_late_answer_after_giving_up_brings_it_back_online(table):
    live, sender, b = tracked(table, 10)
    run(live, sender, 0.0, 15.0)
    assert not b.online
    live.on_response(parse_message(answer(sender.sent[0][2])), 15.0, WALL + 15.0)
    assert b.online


def test_answer_keeps_it_online_and_stops_retransmissions(table):
    live, sender, b = tracked(table, 5)
    for step in range(200):
        t = step * 0.05
        sender.now = t
        before = len(sender.sent)
        live.tick(t, WALL + t)
        for _, _, data in sender.sent[before:]:
            live.on_response(parse_message(answer(data)), t, WALL + t)
    assert b.online
    assert len(sender.sent) == 2  # one probe per interval over 10 s, never retransmitted
    assert live.in_flight == 0


def test_reregistration_during_a_probe_prevents_offline(table):
    live, sender, b = tracked(table, 2)
    run(live, sender, 0.0, 2.5)
    live.alive(b.key, 2.5)  # REGISTER arrived while the probe was unanswered
    run(live, sender, 2.5, 6.5)
    assert b.online


def test_stream_binding_is_not_retransmitted(table):
    live, sender, b = tracked(table, 10, "tcp")
    run(live, sender, 0.0, 15.0)
    assert len(sender.sent) == 1
    assert not b.online


def test_removed_or_expired_bindings_are_no_longer_probed(table):
    sender = FakeSender()
    live = Liveness(table, sender, 1)
    gone, expired = make_binding(1), make_binding(2)
    expired.expires_at = WALL + 0.1
    for b in (gone, expired):
        table.put(b)
        live.track(b.key, 0.0)
    table.remove(gone.aor, gone.contact)
    run(live, sender, 0.0, 3.0)
    assert sender.sent == []
    assert len(live) == 0


def test_unknown_responses_are_ignored(table):
    live = Liveness(table, FakeSender(), 10)
    msg = parse_message(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKother\r\n"
                        b"CSeq: 1 OPTIONS\r\nCall-ID: x\r\n\r\n")
    assert not live.on_response(msg, 0.0, WALL)
