"""Registrar core: RFC 3261 §10 REGISTER semantics, digest auth, redirect answers, bad input."""

import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from floodguard.registrar.accounts import Account
from floodguard.registrar.auth import AuthResult, NonceCounter
from floodguard.registrar.bindings import BindingTable
from floodguard.registrar.core import Registrar, Settings, Source
from floodguard.registrar.uac import Uac
from floodguard.sip import digest
from floodguard.sip.build import authorize
from floodguard.sip.message import parse_message

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "registrar"
SERVER = "192.0.2.1:5060"


class Clock:
    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 5000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


class Env:
    def __init__(self, tmp_path: Path, **overrides) -> None:
        self.clock = Clock()
        self.path = str(tmp_path / "state.db")
        values = {"state_path": self.path, "accounts": "", "max_contacts": 3,
                  "nonce_lifetime": 30}
        values.update(overrides)
        self.settings = Settings(**values)
        self.accounts = {
            "1001": Account("1001", password="secret1001"),
            "1002": Account("1002", password="secret1002"),
            "sha": Account("sha", password="secretsha", algorithms=("SHA-256",)),
        }
        self.table = BindingTable(self.path, now=self.clock.wall)
        self.reg = self.new_registrar()

    def new_registrar(self, started: float | None = None) -> Registrar:
        return Registrar(
            self.settings, self.accounts, self.table, secret=b"k" * 32,
            started=self.clock.wall - 1 if started is None else started,
            wall=lambda: self.clock.wall, mono=lambda: self.clock.mono,
        )

    def send(self, data: bytes, ip: str = "192.0.2.10", port: int = 5070):
        out = self.reg.handle_datagram(data, Source("udp", ip, port, "udp:test"))
        return None if out is None else parse_message(out)

    def uac(self, user: str = "1001", port: int = 5070, ip: str = "192.0.2.10") -> Uac:
        return Uac(user, f"secret{user}", SERVER, f"{ip}:{port}")

    def register(self, uac: Uac, ip: str = "192.0.2.10", **kw):
        port = int(uac.local.rpartition(":")[2])
        challenge = self.send(uac.register(**kw), ip, port)
        assert challenge.status == 401
        return self.send(uac.register(authorization=uac.authorize(challenge), **kw), ip, port)


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    yield e
    e.table.close()


def contacts_of(msg) -> dict[str, int]:
    return {c.uri: c.expires for c in msg.contacts}


# --- challenges -------------------------------------------------------------------------


def test_first_register_is_challenged_md5_first_with_one_nonce(env):
    resp = env.send(env.uac().register())
    assert resp.status == 401
    algs = [c.algorithm for c in resp.challenges]
    assert algs == ["MD5", "SHA-256"]
    assert {c.qop for c in resp.challenges} == {"auth"}
    assert len({c.nonce for c in resp.challenges}) == 1
    assert resp.to_tag
    assert "received=192.0.2.10" in resp.via and "rport=5070" in resp.via


def test_account_algorithms_limit_answers_not_challenges(env):
    # The challenge is the same as anyone's (no per-account list to tell accounts apart) ...
    resp = env.send(env.uac("sha").register())
    assert [c.algorithm for c in resp.challenges] == ["MD5", "SHA-256"]
    uac = env.uac("sha")
    # ... an answer with an algorithm the account does not allow fails like a wrong password ...
    challenge = env.send(uac.register())
    refused = env.send(uac.register(authorization=uac.authorize(challenge, algorithm="MD5")))
    assert refused.status == 401 and env.reg.stats["auth failed"] == 1
    # ... and the allowed one logs in.
    challenge = env.send(uac.register())
    ok = env.send(uac.register(authorization=uac.authorize(challenge, algorithm="SHA-256")))
    assert ok.status == 200


def test_sha256_answer_to_the_second_challenge_is_accepted(env):
    uac = env.uac()
    challenge = env.send(uac.register())
    auth = authorize(challenge, "1001", "secret1001", "REGISTER", uac.uri, algorithm="SHA-256")
    assert env.send(uac.register(authorization=auth)).status == 200


# --- REGISTER semantics -----------------------------------------------------------------------


def test_register_adds_a_binding_and_lists_it(env):
    uac = env.uac()
    ok = env.register(uac)
    assert ok.status == 200
    assert contacts_of(ok) == {uac.contact: 3600}
    assert ok.header("date")
    [binding] = env.table.active("1001", env.clock.wall)
    assert (binding.source_ip, binding.source_port, binding.online) == ("192.0.2.10", 5070, True)


def test_200_lists_every_binding_with_its_remaining_expiry(env):
    env.register(env.uac(port=5070), expires=600)
    env.clock.advance(100)
    ok = env.register(env.uac(port=5072), expires=3600)
    assert contacts_of(ok) == {"sip:1001@192.0.2.10:5070": 500, "sip:1001@192.0.2.10:5072": 3600}


def test_query_without_contact_lists_bindings_and_changes_nothing(env):
    uac = env.uac()
    env.register(uac)
    ok = env.register(uac, contacts=[], expires=None)
    assert ok.status == 200
    assert contacts_of(ok) == {uac.contact: 3600}


def test_contact_expires_parameter_wins_over_the_header(env):
    uac = env.uac()
    ok = env.register(uac, contacts=[f"<{uac.contact}>;expires=120"], expires=3000)
    assert contacts_of(ok) == {uac.contact: 120}


def test_missing_expiry_means_the_registrar_default(env):
    uac = env.uac()
    assert contacts_of(env.register(uac, expires=None)) == {uac.contact: 3600}


def test_expiry_is_capped_at_expire(env):
    uac = env.uac()
    assert contacts_of(env.register(uac, expires=99999)) == {uac.contact: 3600}


def test_interval_too_brief_gets_423_with_min_expires(env):
    uac = env.uac()
    resp = env.register(uac, expires=30)
    assert resp.status == 423
    assert resp.header("min-expires") == "60"
    assert env.table.active("1001", env.clock.wall) == []


def test_expires_zero_removes_the_binding(env):
    uac = env.uac()
    env.register(uac)
    ok = env.register(uac, expires=0)
    assert ok.status == 200 and ok.contacts == ()
    assert len(env.table) == 0


def test_star_with_expires_zero_removes_every_binding(env):
    env.register(env.uac(port=5070))
    env.register(env.uac(port=5072))
    assert len(env.table) == 2
    ok = env.register(env.uac(port=5074), contacts=["*"], expires=0)
    assert ok.status == 200 and ok.contacts == ()
    assert len(env.table) == 0


@pytest.mark.parametrize("contacts,expires", [(["*"], 3600), (["*"], None),
                                              (["*", "<sip:1001@192.0.2.10:5070>"], 0)])
def test_star_needs_expires_zero_and_no_other_contact(env, contacts, expires):
    env.register(env.uac())
    resp = env.register(env.uac(port=5074), contacts=contacts, expires=expires)
    assert resp.status == 400
    assert len(env.table) == 1


def test_refresh_updates_the_same_binding(env):
    uac = env.uac()
    env.register(uac, expires=600)
    env.clock.advance(300)
    ok = env.register(uac, expires=600)
    assert contacts_of(ok) == {uac.contact: 600}
    assert len(env.table) == 1


def test_new_call_id_replaces_a_binding_of_the_same_contact(env):
    env.register(env.uac())
    other = env.uac()  # same contact, new Call-ID
    ok = env.register(other)
    assert len(ok.contacts) == 1
    assert env.table.active("1001", env.clock.wall)[0].call_id == other.call_id


def test_older_cseq_for_the_same_call_id_is_rejected(env):
    uac = env.uac()
    challenge = env.send(uac.register(cseq=10))
    ok = env.send(uac.register(cseq=11, authorization=uac.authorize(challenge), expires=600))
    assert ok.status == 200
    challenge = env.send(uac.register(cseq=3))
    old = env.send(uac.register(cseq=4, authorization=uac.authorize(challenge), expires=0))
    assert old.status == 400 and "Out-of-Order" in old.reason
    assert len(env.table) == 1


def test_malformed_expires_header_is_rejected_after_auth(env):
    uac = env.uac()
    challenge = env.send(uac.register(headers=["Expires: soon"], expires=None))
    resp = env.send(uac.register(authorization=uac.authorize(challenge), expires=None,
                                 headers=["Expires: soon"]))
    assert resp.status == 400


def test_invalid_contact_uri_is_rejected(env):
    resp = env.register(env.uac(), contacts=["<http://example.com/>"])
    assert resp.status == 400
    assert len(env.table) == 0


def test_too_many_contacts_are_refused(env):
    contacts = [f"<sip:1001@192.0.2.10:{5000 + i}>" for i in range(4)]
    assert env.register(env.uac(), contacts=contacts).status == 403
    for i in range(3):
        assert env.register(env.uac(port=6000 + i)).status == 200
    assert env.register(env.uac(port=6010)).status == 403


# --- digest ------------------------------------------------------------------------------------


def test_username_must_match_the_aor(env):
    victim = env.uac("1001")
    challenge = env.send(victim.register())
    auth = authorize(challenge, "1002", "secret1002", "REGISTER", victim.uri)
    attempt = victim.register(authorization=auth)
    assert env.send(attempt).status == 403
    assert env.send(attempt).status == 403  # a retransmission gets the same answer
    assert len(env.table) == 0


def test_unknown_user_and_wrong_password_look_identical(env):
    answers = []
    for user, password in (("1001", "wrong"), ("nosuchuser", "whatever")):
        uac = Uac(user, password, SERVER, "192.0.2.10:5070")
        challenge = env.reg.handle_datagram(uac.register(), Source("udp", "192.0.2.10", 5070, "x"))
        creds = uac.authorize(challenge)
        msg = parse_message(uac.register(authorization=creds))
        result, _ = env.reg.auth.check(msg, "192.0.2.10", env.clock.wall)
        out = env.reg.handle_datagram(uac.register(authorization=creds),
                                      Source("udp", "192.0.2.10", 5070, "x"))
        assert result is AuthResult.FAILED
        resp = parse_message(out)
        header_names = [line.split(b":", 1)[0] for line in out.split(b"\r\n")[1:] if line]
        answers.append((resp.status, resp.reason, header_names,
                        [(sorted(c.params), c.algorithm, c.stale) for c in resp.challenges]))
    assert answers[0] == answers[1]
    assert answers[0][0] == 401


def test_replayed_register_is_rejected(env):
    uac = env.uac()
    challenge = env.send(uac.register())
    captured = uac.register(authorization=uac.authorize(challenge))
    assert env.send(captured).status == 200
    # The same bytes from another port are not a retransmission: the nonce-count was used.
    assert env.send(captured, port=5099).status == 401
    # A fresh branch does not help either.
    rebranched = captured.replace(b"branch=z9hG4bK", b"branch=z9hG4bKx")
    assert env.send(rebranched).status == 401
    # The legitimate client may reuse the nonce with a higher count.
    again = uac.register(authorization=uac.authorize(challenge, nc=2))
    assert env.send(again).status == 200


def test_retransmission_gets_the_same_answer(env):
    uac = env.uac()
    challenge = env.send(uac.register())
    data = uac.register(authorization=uac.authorize(challenge))
    src = Source("udp", "192.0.2.10", 5070, "x")
    first = env.reg.handle_datagram(data, src)
    assert env.reg.handle_datagram(data, src) == first
    assert env.reg.stats["retransmission"] == 1


def test_nonce_from_another_source_is_rejected(env):
    uac = env.uac()
    challenge = env.send(uac.register(), ip="192.0.2.10")
    resp = env.send(uac.register(authorization=uac.authorize(challenge)), ip="192.0.2.11")
    assert resp.status == 401
    assert not any(c.stale for c in resp.challenges)
    assert len(env.table) == 0


def test_expired_nonce_is_stale_only_with_the_right_password(env):
    uac = env.uac()
    challenge = env.send(uac.register())
    env.clock.advance(31)
    resp = env.send(uac.register(authorization=uac.authorize(challenge)))
    assert resp.status == 401 and all(c.stale for c in resp.challenges)
    wrong = env.send(uac.register(authorization=uac.authorize(challenge, password="bad")))
    assert wrong.status == 401 and not any(c.stale for c in wrong.challenges)


def test_nonce_from_before_a_restart_is_stale(env):
    uac = env.uac()
    challenge = env.send(uac.register())
    env.clock.advance(2)
    env.reg = env.new_registrar(started=env.clock.wall - 1)
    resp = env.send(uac.register(authorization=uac.authorize(challenge)))
    assert resp.status == 401 and all(c.stale for c in resp.challenges)


def test_credentials_without_qop_are_challenged(env):
    uac = env.uac()
    challenge = env.send(uac.register())
    c = challenge.challenges[0]
    auth = digest.authorization_header("1001", "secret1001", c.realm, c.nonce, uac.uri,
                                       "REGISTER", qop=None)
    assert env.send(uac.register(authorization=auth)).status == 401


def test_nonce_counter_rejects_replays_and_forgets_stale_buckets():
    counter = NonceCounter(lifetime=10, cap=100)
    assert counter.accept("n1", 100.0, 1, 100.0)
    assert not counter.accept("n1", 100.0, 1, 101.0)
    assert counter.accept("n1", 100.0, 2, 101.0)
    assert counter.accept("n2", 105.0, 1, 105.0)
    counter.prune(125.0)
    assert len(counter) == 0


def test_nonce_counter_is_bounded_and_fails_closed():
    counter = NonceCounter(lifetime=10, cap=5)
    for i in range(50):
        assert counter.accept(f"n{i}", 100.0 + i * 0.01, 1, 100.0 + i * 0.01)
        assert len(counter) <= 5
    # Whatever was dropped is reported as forgotten (answered stale), never accepted again.
    assert counter.forgotten(100.0)
    assert not counter.forgotten(101.0)


# --- persistence -------------------------------------------------------------------------------


def test_bindings_survive_a_restart_with_their_expiry(env, tmp_path):
    uac = env.uac()
    env.register(uac, expires=600)
    env.table.flush()
    env.clock.advance(100)
    reopened = BindingTable(env.path, now=env.clock.wall)
    [binding] = reopened.active("1001", env.clock.wall)
    assert binding.contact == uac.contact and binding.remaining(env.clock.wall) == 500
    reopened.db.close()
    expired = BindingTable(env.path, now=env.clock.wall + 600)
    assert len(expired) == 0
    expired.db.close()


# --- other methods ------------------------------------------------------------------------------


def test_invite_redirects_to_online_contacts_480_offline_404_unknown(env):
    caller = env.uac("1002", port=6000)

    def invite(callee: str):
        challenge = env.send(caller.invite(callee), port=6000)
        assert challenge.status == 401  # nothing about the callee before authentication
        return env.send(caller.invite(callee, cseq=2, authorization=caller.authorize_invite(
            challenge, callee)), port=6000)

    assert invite("1001").status == 480  # known, not registered
    assert invite("nobody").status == 404
    uac = env.uac()
    env.register(uac)
    moved = invite("1001")
    assert moved.status == 302 and [c.uri for c in moved.contacts] == [uac.contact]
    env.table.active("1001", env.clock.wall)[0].online = False
    assert invite("1001").status == 480


def test_options_ack_cancel_bye_and_other_methods(env):
    caller = env.uac("1002", port=6000)
    ok = env.send(caller.options())
    assert ok.status == 200 and "REGISTER" in ok.header("allow")
    invite = caller.invite("1001").decode()
    ack = invite.replace("INVITE sip", "ACK sip", 1).replace("1 INVITE", "1 ACK").encode()
    assert env.send(ack) is None
    for method, status in (("CANCEL", 481), ("BYE", 481), ("MESSAGE", 405), ("SUBSCRIBE", 405)):
        data = invite.replace("INVITE sip", f"{method} sip", 1).replace("1 INVITE", f"1 {method}")
        resp = env.send(data.encode())
        assert resp.status == status, method
        if status == 405:
            assert "INVITE" in resp.header("allow")


# --- malformed input --------------------------------------------------------------------------


CORPUS = tomllib.loads((ASSETS / "expected.toml").read_text())


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_malformed_corpus(env, name):
    data = (ASSETS / "malformed" / name).read_bytes()
    out = env.reg.handle_datagram(data, Source("udp", "192.0.2.9", 5070, "x"))
    expected = CORPUS[name]
    if expected == "drop":
        assert out is None
    else:
        assert out is not None
        status = int(out.split(b" ", 2)[1])
        assert status == expected
        if status == 400:
            assert out.split(b"\r\n", 1)[0] != b"SIP/2.0 400 Bad Request"  # carries a reason
    assert env.send(env.uac().options()).status == 200  # and the next client is served


VALID = Uac("1001", "secret1001", SERVER, "192.0.2.10:5070").register()


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_no_input_makes_the_core_raise(env, data):
    kind = data.draw(st.sampled_from(["random", "mutate", "truncate"]))
    if kind == "random":
        blob = data.draw(st.binary(max_size=2048))
    elif kind == "truncate":
        blob = VALID[: data.draw(st.integers(0, len(VALID)))]
    else:
        blob = bytearray(VALID)
        for _ in range(data.draw(st.integers(1, 8))):
            pos = data.draw(st.integers(0, len(blob) - 1))
            blob[pos] = data.draw(st.integers(0, 255))
        blob = bytes(blob)
    env.reg.handle_datagram(blob, Source("udp", "192.0.2.9", 5070, "x"))
