"""Registrar core: nothing about an account (existence, state, contact, algorithms) reaches a
caller who has not authenticated; authenticated callers still get 302/480/404."""

import re
from pathlib import Path

import pytest

from floodguard.registrar.accounts import Account
from floodguard.registrar.auth import AuthResult
from floodguard.registrar.bindings import BindingTable
from floodguard.registrar.core import Registrar, Settings, Source
from floodguard.registrar.uac import Uac
from floodguard.sip.build import authorize, request
from floodguard.sip.message import parse_message
from tests.integration.registrar_helpers import normalize

SERVER = "192.0.2.1:5060"
CALLER_IP, CALLER_PORT = "192.0.2.66", 5099
# online: registered and answering; offline: registered, liveness lost; idle: never registered;
# sha: limited to SHA-256; nobody: no account at all.
CALLEES = ("online", "offline", "idle", "sha", "nobody")


class Env:
    def __init__(self, tmp_path: Path, algorithms: tuple[str, ...] = ("MD5", "SHA-256")) -> None:
        self.wall, self.mono = 1_800_000_000.0, 5000.0
        self.settings = Settings(state_path=str(tmp_path / "state.db"), accounts="",
                                 algorithms=algorithms)
        self.table = BindingTable(self.settings.state_path, now=self.wall)
        accounts = {user: Account(user, password=f"secret{user}")
                    for user in ("online", "offline", "idle", "caller")}
        accounts["sha"] = Account("sha", password="secretsha", algorithms=("SHA-256",))
        self.reg = Registrar(self.settings, accounts, self.table, secret=b"e" * 32,
                             started=self.wall - 1, wall=lambda: self.wall,
                             mono=lambda: self.mono)

    def raw(self, data: bytes, ip: str = CALLER_IP, port: int = CALLER_PORT) -> bytes | None:
        return self.reg.handle_datagram(data, Source("udp", ip, port, "udp:test"))

    def send(self, data: bytes, ip: str = CALLER_IP, port: int = CALLER_PORT):
        out = self.raw(data, ip, port)
        return None if out is None else parse_message(out)

    def register(self, user: str, port: int) -> Uac:
        uac = Uac(user, f"secret{user}", SERVER, f"192.0.2.10:{port}")
        challenge = self.send(uac.register(), "192.0.2.10", port)
        ok = self.send(uac.register(authorization=uac.authorize(
            challenge, algorithm="SHA-256" if user == "sha" else None)), "192.0.2.10", port)
        assert ok.status == 200
        return uac


@pytest.fixture
def env(tmp_path):
    e = Env(tmp_path)
    e.register("online", 5070)
    e.register("offline", 5071)
    e.register("sha", 5072)
    [binding] = e.table.active("offline", e.wall)
    binding.online = False
    yield e
    e.table.close()


def same_request(method: str, callee: str) -> bytes:
    """The same request for every callee but the user part (fixed branch, tags, Call-ID)."""
    uri = f"sip:{callee}@{SERVER}"
    headers = [f"Contact: <sip:caller@{CALLER_IP}:{CALLER_PORT}>"]
    if method == "REGISTER":
        uri = f"sip:{SERVER}"
        headers.append("Expires: 3600")
    return request(method, uri, via=f"{CALLER_IP}:{CALLER_PORT}", branch="z9hG4bKsame",
                   from_uri=f"sip:{callee}@{SERVER}" if method == "REGISTER"
                   else f"sip:caller@{SERVER}", to_uri=f"sip:{callee}@{SERVER}",
                   call_id="same@test", cseq=1, headers=headers)


@pytest.mark.parametrize("method", ["INVITE", "REGISTER", "OPTIONS", "MESSAGE", "SUBSCRIBE",
                                    "BYE", "CANCEL", "INFO"])
def test_unauthenticated_requests_look_the_same_for_every_callee(env, method):
    answers = {callee: env.raw(same_request(method, callee)) for callee in CALLEES}
    assert all(a is not None for a in answers.values())
    shown = {callee: normalize(a, callee) for callee, a in answers.items()}
    assert len(set(shown.values())) == 1, shown
    status = parse_message(answers["online"]).status
    assert status not in (302, 404, 480)
    if method in ("INVITE", "REGISTER"):
        assert status == 401
        algs = [c.algorithm for c in parse_message(answers["sha"]).challenges]
        assert algs == ["MD5", "SHA-256"]  # the global list, not the account's own


def test_wrong_password_unknown_user_and_disallowed_algorithm_look_the_same(env):
    answers = []
    for user, password, algorithm in (("idle", "wrong", None), ("nobody", "x", None),
                                      ("sha", "secretsha", "MD5")):
        uac = Uac(user, password, SERVER, f"{CALLER_IP}:{CALLER_PORT}", call_id="c@test")
        challenge = env.send(uac.register(cseq=1))
        data = uac.register(cseq=2, authorization=uac.authorize(challenge, algorithm=algorithm))
        data = re.sub(rb"branch=z9hG4bK\w+", b"branch=z9hG4bKfixed", data)
        answers.append(normalize(env.raw(data), user))
    assert answers[0] == answers[1] == answers[2]
    assert answers[0].startswith(b"SIP/2.0 401 ")
    assert env.reg.stats["auth failed"] == 3


def invite_as(env, caller: Uac, callee: str, *, password: str | None = None):
    challenge = env.send(caller.invite(callee))
    assert challenge.status == 401
    auth = caller.authorize_invite(challenge, callee, password=password)
    return env.send(caller.invite(callee, cseq=2, authorization=auth))


def test_authenticated_caller_gets_302_480_404(env):
    caller = Uac("caller", "secretcaller", SERVER, f"{CALLER_IP}:{CALLER_PORT}")
    moved = invite_as(env, caller, "online")
    assert moved.status == 302
    assert [c.uri for c in moved.contacts] == ["sip:online@192.0.2.10:5070"]
    assert invite_as(env, caller, "offline").status == 480
    assert invite_as(env, caller, "idle").status == 480
    assert invite_as(env, caller, "nobody").status == 404


def test_wrong_password_or_unknown_caller_learns_nothing(env):
    for user, password in (("caller", "wrong"), ("ghost", "x")):
        caller = Uac(user, password, SERVER, f"{CALLER_IP}:{CALLER_PORT}")
        for callee in ("online", "nobody"):
            answer = invite_as(env, caller, callee)
            assert answer.status == 401 and not answer.contacts
    assert env.reg.stats["INVITE auth failed"] == 4
    assert not any(key in env.reg.stats for key in ("INVITE 302", "INVITE 404"))


def test_invite_credentials_cannot_be_replayed_but_retransmissions_are_answered(env):
    caller = Uac("caller", "secretcaller", SERVER, f"{CALLER_IP}:{CALLER_PORT}")
    challenge = env.send(caller.invite("online"))
    signed = caller.invite("online", cseq=2, call_id="r@test",
                           authorization=caller.authorize_invite(challenge, "online"))
    first = env.raw(signed)
    assert parse_message(first).status == 302
    assert env.raw(signed) == first  # a UDP retransmission: the same answer
    # The same bytes from another port (a new transaction to us) are a replay ...
    assert env.send(signed, port=CALLER_PORT + 1).status == 401
    # ... and from another address the nonce is foreign.
    assert env.send(signed, ip="192.0.2.77").status == 401


def test_register_credentials_do_not_work_for_invite(env):
    caller = Uac("caller", "secretcaller", SERVER, f"{CALLER_IP}:{CALLER_PORT}")
    challenge = env.send(caller.invite("online"))
    # Signed for method REGISTER: the digest covers the method, so it fails for INVITE.
    wrong = authorize(challenge, "caller", "secretcaller", "REGISTER", caller.invite_uri("online"))
    assert env.send(caller.invite("online", cseq=2, authorization=wrong)).status == 401


def test_stale_invite_nonce_is_stale_only_with_the_right_password(env):
    caller = Uac("caller", "secretcaller", SERVER, f"{CALLER_IP}:{CALLER_PORT}")
    challenge = env.send(caller.invite("online"))
    env.wall += 120
    good = env.send(caller.invite("online", cseq=2, authorization=caller.authorize_invite(
        challenge, "online")))
    assert good.status == 401 and all(c.stale for c in good.challenges)
    bad = env.send(caller.invite("online", cseq=3, authorization=caller.authorize_invite(
        challenge, "online", password="wrong")))
    assert bad.status == 401 and not any(c.stale for c in bad.challenges)


def test_an_account_limited_to_an_unlisted_algorithm_still_logs_in(tmp_path):
    env = Env(tmp_path, algorithms=("MD5",))
    try:
        # Everyone is offered what some account needs, so "sha" is not singled out ...
        for user in ("sha", "nobody", "idle"):
            uac = Uac(user, "x", SERVER, f"{CALLER_IP}:{CALLER_PORT}")
            assert [c.algorithm for c in env.send(uac.register()).challenges] == ["MD5",
                                                                                 "SHA-256"]
        # ... and can log in with it, while an MD5 answer fails like a wrong password.
        env.register("sha", 5072)
        uac = Uac("idle", "secretidle", SERVER, f"{CALLER_IP}:{CALLER_PORT}")
        challenge = env.send(uac.register())
        answer = env.send(uac.register(authorization=uac.authorize(challenge,
                                                                   algorithm="SHA-256")))
        assert answer.status == 401  # "idle" may use only the configured MD5
        assert env.reg.stats[f"auth {AuthResult.FAILED.value}"] == 1
    finally:
        env.table.close()
