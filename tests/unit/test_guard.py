"""The guard's packet path with real parsing and the real engine; kernel sets in memory."""

import io
import json
import time

import pytest

from floodguard.config import Config, loads
from floodguard.events import EventLog
from floodguard.guard import HOOK_LOCAL_IN, HOOK_LOCAL_OUT, Guard
from floodguard.store import Store
from tests.kernelfake import KernelSets
from tests.sipmsg import auth_value, opaque_of, register, response, tcp, udp

SERVER = "192.0.2.10"


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def rig(tmp_path):
    def make(cfg: Config | None = None, clock=None):
        clock = clock or Clock()
        log = io.StringIO()
        cfg = cfg or Config()
        sets = KernelSets(cfg)
        store = Store(tmp_path / "state.db")
        guard = Guard(cfg, sets=sets, store=store, events=EventLog(log, True),
                      clock=clock, wall=lambda: clock.t + 1_700_000_000)
        return guard, sets, store, log, clock
    return make


def attempt(guard, client, user, password, nonce_seq, call_id, cseq, final=401, port=5060):
    """One challenge-response round: REGISTER -> 401 (nonce) -> REGISTER+auth -> final;
    ``port``: the client's UDP port."""
    nonce = f"nonce{nonce_seq}"
    req = udp(client, SERVER, port, 5060, register(user, src=client, call_id=call_id, cseq=cseq))
    assert guard.handle(req, HOOK_LOCAL_IN)
    chal = response(401, "Unauthorized", user, call_id=call_id, cseq=cseq, challenge_nonce=nonce)
    out = guard.handle(udp(SERVER, client, 5060, port, chal), HOOK_LOCAL_OUT)
    assert out
    req = udp(client, SERVER, port, 5060, register(
        user, src=client, call_id=call_id, cseq=cseq + 1,
        auth=auth_value(user, password, nonce, opaque=opaque_of(out))))
    accepted = guard.handle(req, HOOK_LOCAL_IN)
    if final == 200:
        answer = response(200, "OK", user, call_id=call_id, cseq=cseq + 1, expires=3600)
    else:
        answer = response(final, "Forbidden" if final == 403 else "Unauthorized", user,
                          call_id=call_id, cseq=cseq + 1, challenge_nonce=f"n{nonce_seq}x")
    guard.handle(udp(SERVER, client, 5060, port, answer), HOOK_LOCAL_OUT)
    return accepted


def test_six_proven_failures_put_the_source_in_the_ban_set(rig):
    guard, sets, store, log, clock = rig()
    client = "198.51.100.7"
    for i in range(6):
        clock.t += 1
        assert attempt(guard, client, "1001", "wrong", i, f"c{i}", 1)
    assert sets.entries[("ban", client)] == 180
    row = store.get_ban(client, now=guard.wall())
    assert row is not None and row.kind == "suspend" and row.failures == 6
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["suspend"]
    assert events[0]["ip"] == client and events[0]["seconds"] == 180
    # the next packet from it is dropped by the guard as well
    req = udp(client, SERVER, 5060, 5060, register("1001", src=client, call_id="z", cseq=1))
    assert guard.handle(req, HOOK_LOCAL_IN) is False


def test_success_marks_known_in_set_and_store(rig):
    guard, sets, store, _, _ = rig()
    assert attempt(guard, "198.51.100.8", "1002", "pw", 1, "k1", 1, final=200)
    assert ("known", "198.51.100.8") not in sets.entries  # never on the packet path
    guard.tick()
    assert sets.entries[("known", "198.51.100.8")] == 7200
    assert store.active_known(now=guard.wall())[0][0] == "198.51.100.8"


def test_spoofed_nonces_never_ban(rig):
    guard, sets, _, _, clock = rig()
    victim = "198.51.100.9"
    for i in range(50):
        clock.t += 0.5
        req = udp(victim, SERVER, 5060, 5060, register(
            "1001", src=victim, call_id=f"s{i}", cseq=2, auth=auth_value("1001", "x", f"bogus{i}")))
        guard.handle(req, HOOK_LOCAL_IN)
        guard.handle(udp(SERVER, victim, 5060, 5060, response(
            403, "Forbidden", "1001", call_id=f"s{i}", cseq=2)), HOOK_LOCAL_OUT)
    assert not any(kind == "ban" for kind, _ in sets.entries)


def test_garbage_udp_is_dropped_and_tcp_is_judged_whole_message_by_message(rig):
    guard, _, _, _, _ = rig()
    assert guard.handle(udp("203.0.113.1", SERVER, 4000, 5060, b"\x00\x01garbage"), HOOK_LOCAL_IN) \
        is False
    assert guard.handle(b"\x45\x00junk", HOOK_LOCAL_IN) is False
    assert any(k.startswith("drop:malformed") for k in guard.counters)
    client = "203.0.113.2"
    syn = tcp(client, SERVER, 40000, 5060, b"", flags="S", seq=999)
    assert guard.handle(syn, HOOK_LOCAL_IN) is True
    whole = register("1001", src=client, call_id="t", cseq=1)
    # one REGISTER written in two send() calls: judged once, when it is complete
    assert guard.handle(tcp(client, SERVER, 40000, 5060, whole[:60], seq=1000),
                        HOOK_LOCAL_IN) is True
    assert guard.counters["pass:ok"] == 0
    assert guard.handle(tcp(client, SERVER, 40000, 5060, whole[60:], seq=1000 + 60),
                        HOOK_LOCAL_IN) is True
    assert guard.counters["pass:ok"] == 1
    # a retransmission of the same bytes is not judged again ...
    assert guard.handle(tcp(client, SERVER, 40000, 5060, whole[60:], seq=1000 + 60),
                        HOOK_LOCAL_IN) is True
    assert guard.counters["pass:ok"] == 1
    # ... different bytes for the same range are dropped and cut the flow
    forged = b"X" * (len(whole) - 60)
    assert guard.handle(tcp(client, SERVER, 40000, 5060, forged, seq=1000 + 60),
                        HOOK_LOCAL_IN) is False
    assert guard.counters["drop:tcp-desync"] == 1
    # six REGISTERs pipelined in one segment of a new flow: six judged
    assert guard.handle(tcp(client, SERVER, 40001, 5060, b"", flags="S", seq=5), HOOK_LOCAL_IN)
    six = b"".join(register("1001", src=client, call_id=f"p{i}", cseq=1) for i in range(6))
    assert guard.handle(tcp(client, SERVER, 40001, 5060, six, seq=6), HOOK_LOCAL_IN) is True
    assert guard.counters["pass:ok"] == 7
    # a segment after a gap is dropped (the sender retransmits in order)
    gap = tcp(client, SERVER, 40001, 5060, whole, seq=6 + len(six) + 100)
    assert guard.handle(gap, HOOK_LOCAL_IN) is False and guard.counters["drop:tcp-gap"] == 1


def test_ipv6_guesses_rotating_through_one_64_are_one_source(rig):
    guard, sets, _, _, clock = rig()
    server = "2001:db8::10"
    for i in range(6):
        clock.t += 1
        nonce = f"v6n{i}"
        client = f"2001:db8::{i + 0x100:x}"  # a fresh address of the same /64 for every guess
        guard.handle(udp(client, server, 5060, 5060, register(
            "1001", src=f"[{client}]", call_id=f"v{i}", cseq=1)), HOOK_LOCAL_IN)
        out = guard.handle(udp(server, client, 5060, 5060, response(
            401, "Unauthorized", "1001", call_id=f"v{i}", cseq=1, challenge_nonce=nonce)),
            HOOK_LOCAL_OUT)
        guard.handle(udp(client, server, 5060, 5060, register(
            "1001", src=f"[{client}]", call_id=f"v{i}", cseq=2,
            auth=auth_value("1001", "bad", nonce, opaque=opaque_of(out)))), HOOK_LOCAL_IN)
        guard.handle(udp(server, client, 5060, 5060, response(
            401, "Unauthorized", "1001", call_id=f"v{i}", cseq=2, challenge_nonce=nonce + "b")),
            HOOK_LOCAL_OUT)
    assert sets.entries[("ban", "2001:db8::/64")] == 180  # the /64, in the per-prefix set
    blocked = udp("2001:db8::ffff", server, 5060, 5060, register(
        "1001", src="[2001:db8::ffff]", call_id="late", cseq=1))
    assert guard.handle(blocked, HOOK_LOCAL_IN) is False  # any address of that /64


def test_restart_restores_bans_with_remaining_time(rig, tmp_path):
    guard, sets, store, _, clock = rig()
    for i in range(6):
        clock.t += 1
        attempt(guard, "198.51.100.20", "1001", "bad", i, f"r{i}", 1)
    guard.snapshot()
    store.close()
    clock2 = Clock()
    clock2.t = clock.t + 100  # 100 s later
    guard2, sets2, _, _, _ = rig(clock=clock2)
    assert guard2.restore() == 1
    assert 79 <= sets2.entries[("ban", "198.51.100.20")] <= 81
    assert guard2.engine.is_banned(clock2.t, "198.51.100.20")


def test_failures_counted_after_the_last_snapshot_survive_a_crash(rig):
    guard, sets, store, _, clock = rig()
    guard.snapshot()  # the last snapshot, then four proven failures and a crash (no snapshot)
    for i in range(4):
        clock.t += 1
        attempt(guard, "198.51.100.21", "1001", "bad", i, f"k{i}", 1)
    assert ("ban", "198.51.100.21") not in sets.entries
    store.close()
    clock2 = Clock()
    clock2.t = clock.t + 5
    guard2, sets2, _, _, _ = rig(clock=clock2)
    guard2.restore()
    # two more wrong guesses, not six, and the source is suspended
    for i in range(2):
        clock2.t += 1
        attempt(guard2, "198.51.100.21", "1001", "bad", 10 + i, f"l{i}", 1)
    assert sets2.entries[("ban", "198.51.100.21")] == 180
    # a snapshot holds them now: the journal is emptied, a second restart counts nothing twice
    guard2.snapshot()
    assert guard2.failures.since(0.0) == []


def test_full_set_keeps_the_ban_in_the_store(rig):
    guard, sets, store, log, clock = rig()
    sets.maxelem = 0  # the kernel refuses every new entry: SetFullError
    for i in range(6):
        clock.t += 1
        attempt(guard, "198.51.100.30", "1001", "bad", i, f"f{i}", 1)
    assert store.get_ban("198.51.100.30", now=guard.wall()) is not None
    assert guard.set_errors == 1
    assert '"set_error"' in log.getvalue()


def test_operator_commands_reach_the_engine(rig):
    guard, _, store, _, clock = rig()
    store.queue_command("ban", "203.0.113.50", 600, "manual test")
    guard.tick()
    assert guard.engine.is_banned(clock.t, "203.0.113.50")
    store.queue_command("unban", "203.0.113.50")
    guard.tick()
    assert not guard.engine.is_banned(clock.t, "203.0.113.50")


def test_allow_listed_source_is_never_banned(rig):
    guard, sets, _, _, clock = rig(loads('[blacklist]\nallow = ["198.51.100.0/24"]\n'))
    for i in range(12):
        clock.t += 1
        attempt(guard, "198.51.100.40", "1001", "bad", i, f"a{i}", 1)
    assert ("ban", "198.51.100.40") not in sets.entries


def test_counters_are_published_to_the_store(rig):
    guard, _, store, _, clock = rig()
    attempt(guard, "198.51.100.60", "1001", "pw", 1, "p1", 1, final=200)
    guard.handle(udp("203.0.113.9", SERVER, 4000, 5060, b"garbage\r\n\r\n"), HOOK_LOCAL_IN)
    guard.tick()
    saved, data = store.load_snapshot("counters-engine")
    assert data["verdicts"]["pass:ok"] == 2
    assert data["verdicts"]["drop:malformed:not_sip"] == 1
    assert data["engine"]["successes"] == 1


def test_monitor_mode_drops_and_bans_nothing_but_says_what_it_would_do(rig):
    guard, sets, store, log, clock = rig(loads('[guard]\nmode = "monitor"\n'))
    client = "198.51.100.70"
    for i in range(8):
        clock.t += 1
        assert attempt(guard, client, "1001", "wrong", i, f"m{i}", 1)
    assert not any(kind == "ban" for kind, _ in sets.entries)
    assert store.get_ban(client, now=guard.wall()) is None
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["would_suspend"]
    assert events[0]["ip"] == client and events[0]["seconds"] == 180
    assert guard.counters["would-ban:suspend"] == 1
    assert guard.counters["would-drop:suspended"] >= 1


def test_guard_reports_a_subnet_dominating_registers(rig):
    guard, _, _, log, clock = rig()
    for i in range(150):
        clock.t += 0.01
        src = f"203.0.113.{i % 200}"
        guard.handle(udp(src, SERVER, 5060, 5060, register("1001", src=src, call_id=f"d{i}",
                                                           cseq=1)), HOOK_LOCAL_IN)
    clock.t += 61
    guard.tick()
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    anomaly = [e for e in events if e["event"] == "anomaly"]
    assert anomaly and anomaly[0]["metric"] == "register" and anomaly[0]["kind"] == "subnet"
    assert guard.counters["anomaly:register:subnet"] == 1


def test_large_packets(rig):
    from floodguard.kernel.nfqueue import COPY_RANGE

    guard, _, _, _, clock = rig()
    big = register("1001", src="203.0.113.20", call_id="big", cseq=1).replace(
        b"Content-Length: 0", b"Contact: <sip:" + b"a" * 6000 + b"@x>\r\nContent-Length: 0")
    # over UDP: a 6 kB REGISTER is abuse, dropped unread
    assert len(udp("203.0.113.20", SERVER, 5060, 5060, big)) > Config().limits.udp_oversize
    assert guard.handle(udp("203.0.113.20", SERVER, 5060, 5060, big), HOOK_LOCAL_IN) is False
    assert guard.counters["drop:oversize"] == 1
    # the registrar's own large answer is not
    ok = response(200, "OK", "1001", call_id="big", cseq=1).replace(
        b"Content-Length: 0", b"X-Pad: " + b"p" * 6000 + b"\r\nContent-Length: 0")
    assert guard.handle(udp(SERVER, "203.0.113.20", 5060, 5060, ok), HOOK_LOCAL_OUT) is True
    assert guard.counters["drop:oversize"] == 1
    # a whole large TCP segment is read as SIP
    whole = tcp("203.0.113.20", SERVER, 40000, 5060, big)
    assert guard.handle(whole, HOOK_LOCAL_IN) is True
    assert guard.counters["pass:ok"] >= 1
    # one cut short by the queue is judged by its source
    longest = tcp("203.0.113.20", SERVER, 40000, 5060, big + b"x" * (65495 - len(big)))
    assert len(longest) == 65535
    cut = longest[:COPY_RANGE]
    assert guard.handle(cut, HOOK_LOCAL_IN) is True
    assert guard.counters["pass:truncated"] == 1
    guard.engine.ban(clock.t, "203.0.113.20", 60)
    assert guard.handle(cut, HOOK_LOCAL_IN) is False
    assert guard.handle(b"\x45" + b"\x00" * 30, HOOK_LOCAL_IN) is False  # short junk: malformed


def test_udp_oversize_is_the_configured_size(rig):
    """limits.udp_oversize sets where "oversize" starts, also after a reload."""
    guard, _, _, _, _ = rig()
    padded = register("1001", src="203.0.113.21", call_id="pad", cseq=1).replace(
        b"Content-Length: 0", b"X-Pad: " + b"p" * 1600 + b"\r\nContent-Length: 0")
    packet = udp("203.0.113.21", SERVER, 5060, 5060, padded)
    assert 1500 < len(packet) < 4016
    assert guard.handle(packet, HOOK_LOCAL_IN) is True
    guard.reload(loads(f"[limits]\nudp_oversize = {len(packet)}\n"))
    assert guard.handle(packet, HOOK_LOCAL_IN) is False
    assert guard.counters["drop:oversize"] == 1
    guard.reload(loads(f"[limits]\nudp_oversize = {len(packet) + 1}\n"))
    assert guard.handle(packet, HOOK_LOCAL_IN) is True
    assert guard.counters["drop:oversize"] == 1


def test_after_the_first_registration_period_unproven_credentials_are_dropped(rig):
    """A bogus-credential flood never reaches the registrar, not even stripped, once every
    phone had a registration period to pick up a token; a known-good source still gets its
    stale credentials taken out (its registrar challenges it afresh)."""
    guard, _, _, _, clock = rig()
    guard._first_period_ends = guard.wall() - 1  # deployed more than registrar.expire ago

    def bogus(client: str, call_id: str) -> bool | bytes:
        return guard.handle(udp(client, SERVER, 5060, 5060, register(
            "1001", src=client, call_id=call_id, cseq=2, auth=auth_value("1001", "x", "n"))),
            HOOK_LOCAL_IN)

    assert [bogus(f"198.18.0.{i}", f"s{i}") for i in range(1, 21)] == [False] * 20
    assert guard.counters["drop:unproven"] == 20 and guard.counters["proof:stripped"] == 0
    clock.t += 1
    assert attempt(guard, "192.0.2.50", "1001", "secret1001", 1, "ok", 1, final=200)
    out = bogus("192.0.2.50", "stale")
    assert isinstance(out, bytes) and b"Authorization" not in out


def test_unproven_credentials_never_reach_the_registrar(rig):
    from floodguard.guard_state import STRIP_RATE

    guard, _, _, _, clock = rig()
    stripped = dropped = 0
    for i in range(int(STRIP_RATE) + 50):  # a flood of bogus credentials from many sources
        client = f"198.18.{i // 250}.{i % 250 + 1}"
        req = udp(client, SERVER, 5060, 5060, register(
            "1001", src=client, call_id=f"b{i}", cseq=2, auth=auth_value("1001", "x", "n")))
        out = guard.handle(req, HOOK_LOCAL_IN)
        if isinstance(out, bytes):
            assert b"Authorization" not in out  # taken out: the registrar just challenges
            stripped += 1
        else:
            assert out is False
            dropped += 1
    # a budget of rewrites per second; beyond it, a cheap drop
    assert stripped == STRIP_RATE and dropped == 50
    assert guard.counters["drop:unproven"] == 50
    clock.t += 1.0
    client = "198.18.9.9"
    req = udp(client, SERVER, 5060, 5060, register(
        "1001", src=client, call_id="late", cseq=2, auth=auth_value("1001", "x", "n")))
    assert isinstance(guard.handle(req, HOOK_LOCAL_IN), bytes)


# ---------------------------------------------------------------- endpoints (issue #16)


def _office(guard, clock, client):
    """Two phones behind one address register (1002, 1003), then 1001's stale password fails
    six times: returns the events so far."""
    for i, user in enumerate(("1002", "1003")):
        clock.t += 1
        assert attempt(guard, client, user, "pw", 100 + i, f"ok{i}", 1, final=200)
    for i in range(6):
        clock.t += 1
        assert attempt(guard, client, "1001", "wrong", i, f"s{i}", 1)


def test_a_shared_address_loses_only_the_failing_endpoint(rig):
    guard, sets, store, log, clock = rig()
    client = "198.51.100.9"
    _office(guard, clock, client)
    assert ("ban", client) not in sets.entries and store.get_ban(client) is None
    (row,) = store.active_pair_bans(now=guard.wall())
    assert (row.ip, row.aor.split("@")[0], row.failures, row.level) == (client, "1001", 6, 1)
    assert round(row.remaining(guard.wall())) == 180
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    (suspend,) = [e for e in events if e["event"] == "suspend"]
    assert suspend["ip"] == client and suspend["aor"] == row.aor and suspend["scope"] == "aor"
    assert suspend["seconds"] == 180 and suspend["by"] == "guard"
    # 1001's REGISTERs are dropped unanswered; 1002 and new 1004 from the address pass
    req = udp(client, SERVER, 5060, 5060, register("1001", src=client, call_id="z", cseq=1))
    assert guard.handle(req, HOOK_LOCAL_IN) is False
    assert guard.counters["drop:suspended:pair"] == 1
    clock.t += 1
    assert attempt(guard, client, "1002", "pw", 200, "again", 1, final=200)
    assert attempt(guard, client, "1004", "pw", 201, "new", 1, final=200)
    # known-good pairs are written to the store from tick()
    guard.tick()
    pairs = {aor.split("@")[0] for ip, aor, _ in store.active_known_pairs(now=guard.wall())}
    assert pairs == {"1002", "1003", "1004"}
    # a restart keeps the suspension and the pairs
    again, *_ = rig(clock=clock)
    again.restore()
    assert again.handle(req, HOOK_LOCAL_IN) is False
    assert again.engine.is_shared(clock.t, client)
    # the end is an event, and the row goes
    clock.t += 181
    guard.tick()
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    (end,) = [e for e in events if e["event"] == "suspend_end"]
    assert (end["ip"], end["aor"], end["reason"]) == (client, row.aor, "expired")
    assert store.active_pair_bans(now=guard.wall()) == []
    assert guard.handle(req, HOOK_LOCAL_IN) is not False


def test_operator_unban_lifts_endpoint_suspensions(rig):
    from floodguard.bans import BanBook

    clock = Clock()
    clock.t = time.time() - 1_700_000_000  # the operator's commands use the real time
    guard, sets, store, log, clock = rig(clock=clock)
    client = "198.51.100.10"
    _office(guard, clock, client)
    book = BanBook(guard.cfg, store, sets, events=EventLog(log, True), forget=lambda ips: None)
    assert book.remove(client)  # `floodguard blacklist remove IP`: store and event at once
    assert store.active_pair_bans() == []
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    ends = [e for e in events if e["event"] == "suspend_end"]
    assert [(e["reason"], e["by"]) for e in ends] == [("manual", "operator")]
    req = udp(client, SERVER, 5060, 5060, register("1001", src=client, call_id="y", cseq=1))
    assert guard.handle(req, HOOK_LOCAL_IN) is False  # until the guard takes the command
    guard.tick()
    assert guard.handle(req, HOOK_LOCAL_IN) is not False
    assert [r.aor.split("@")[0] for r in store.ended_pair_bans()] == ["1001"]  # history


def test_operator_lifts_one_endpoint_by_aor(rig):
    from floodguard.bans import BanBook

    clock = Clock()
    clock.t = time.time() - 1_700_000_000
    guard, sets, store, log, clock = rig(clock=clock)
    client, other = "198.51.100.12", "198.51.100.13"
    _office(guard, clock, client)
    _office(guard, clock, other)
    assert len(store.active_pair_bans()) == 2
    book = BanBook(guard.cfg, store, sets, events=EventLog(log, True), forget=lambda ips: None)
    assert book.remove_endpoint("nobody") == []
    (lifted,) = book.remove_endpoint("1001", source=client)
    assert lifted.startswith("1001@") and lifted.endswith(f"from {client}")
    assert [r.ip for r in store.active_pair_bans()] == [other]
    guard.tick()
    for src, dropped in ((client, False), (other, True)):
        req = udp(src, SERVER, 5060, 5060, register("1001", src=src, call_id="w", cseq=1))
        assert (guard.handle(req, HOOK_LOCAL_IN) is False) is dropped
    assert len(book.remove_endpoint("1001")) == 1  # every source when none is given
    assert store.active_pair_bans() == []


def test_monitor_mode_says_it_would_suspend_the_endpoint(rig):
    guard, sets, store, log, clock = rig(loads('[guard]\nmode = "monitor"\n'))
    client = "198.51.100.11"
    _office(guard, clock, client)
    assert not any(kind == "ban" for kind, _ in sets.entries)
    assert store.active_pair_bans(now=guard.wall()) == []
    events = [json.loads(line) for line in log.getvalue().splitlines()]
    (would,) = [e for e in events if e["event"].startswith("would_")]
    assert would["event"] == "would_suspend" and would["scope"] == "aor"
    assert would["aor"].startswith("1001@") and would["ip"] == client
    req = udp(client, SERVER, 5060, 5060, register("1001", src=client, call_id="x", cseq=1))
    assert guard.handle(req, HOOK_LOCAL_IN) is not False
    assert guard.counters["would-drop:suspended:pair"] == 1
    assert guard.counters["would-ban:pair"] == 1
