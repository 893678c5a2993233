"""The policy engine's test harness: fake SIP messages satisfying the engine's SipView
protocol and a fake registrar answering as a real one would; time is a plain float the
harness moves by hand."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from floodguard.config import (
    Config,
)
from floodguard.policy import Ban, Engine, SipView, Verdict

NAT = "203.0.113.10"
ATTACKER = "198.51.100.66"
VICTIM = "192.0.2.20"


# ---------------------------------------------------------------- fakes


@dataclass(frozen=True, slots=True)
class Auth:
    username: str | None
    nonce: str | None
    realm: str | None = "floodguard"


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: str | None
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Msg:
    is_request: bool = True
    method: str | None = "REGISTER"
    status: int | None = None
    call_id: str | None = "call-1"
    cseq_num: int | None = 1
    cseq_method: str | None = "REGISTER"
    aor: str | None = "alice@example.com"
    user_agent: str | None = "Yealink SIP-T46S"
    authorization: Auth | None = None
    challenges: tuple[Challenge, ...] = ()
    granted_expires: int | None = None


def _as_view(msg: Msg) -> SipView:
    return msg  # the fakes satisfy the protocol (checked statically)


@dataclass
class Harness:
    """An engine plus a fake registrar: answers and nonces as a real one would send them.

    Each request moves time on by ``step`` seconds (0.25: 4 REGISTERs/s per source, under the
    default 5/s) so long flows are not cut by the rate limits; limit tests use step=0.
    """

    cfg: Config = field(default_factory=Config)
    now: float = 1000.0
    step: float = 0.25
    kwargs: dict = field(default_factory=dict)
    actions: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.eng = Engine(self.cfg, **self.kwargs)
        self._nonce = 0
        self._call = 0
        # (client, nonce) of every challenge sent: what the guard's proof token stands for
        self.proofs: set[tuple[str, str]] = set()

    # low level ----------------------------------------------------------
    def req(self, src: str, msg: Msg) -> Verdict:
        self.now += self.step
        auth = msg.authorization
        proven = auth is not None and (src, auth.nonce) in self.proofs
        v = self.eng.on_request(self.now, src, _as_view(msg), proven)
        self.actions.extend(v.actions)
        return v

    def resp(self, client: str, msg: Msg) -> Verdict:
        v = self.eng.on_response(self.now, client, _as_view(msg))
        assert v.accept  # answers are never dropped
        self.actions.extend(v.actions)
        return v

    def fresh_nonce(self) -> str:
        self._nonce += 1
        return f"nonce-{self._nonce}"

    def new_call(self) -> str:
        self._call += 1
        return f"call-{self._call}"

    def challenge(self, client: str, call_id: str, cseq: int, *, stale: bool = False,
                  status: int = 401) -> str:
        nonce = self.fresh_nonce()
        self.proofs.add((client, nonce))
        self.resp(client, Msg(is_request=False, method=None, status=status, call_id=call_id,
                              cseq_num=cseq, challenges=(Challenge(nonce, stale),)))
        return nonce

    def answer(self, client: str, call_id: str, cseq: int, status: int,
               expires: int | None = None) -> Verdict:
        return self.resp(client, Msg(is_request=False, method=None, status=status,
                                     call_id=call_id, cseq_num=cseq, granted_expires=expires))

    # flows ----------------------------------------------------------------
    def first_challenge(self, src: str, aor: str) -> tuple[str, int, str]:
        """REGISTER without credentials -> 401; returns (call_id, next cseq, nonce)."""
        call_id = self.new_call()
        assert self.req(src, Msg(call_id=call_id, cseq_num=1, aor=aor)).accept
        nonce = self.challenge(src, call_id, 1)
        return call_id, 2, nonce

    def attempt(self, src: str, aor: str, call_id: str, cseq: int, nonce: str, *,
                good: bool, fail_status: int = 401, expires: int | None = 3600) -> str | None:
        """REGISTER with credentials; the registrar answers 200 or a failure (a 401 carries
        a fresh nonce, returned)."""
        user = aor.split("@")[0]
        v = self.req(src, Msg(call_id=call_id, cseq_num=cseq, aor=aor,
                              authorization=Auth(user, nonce)))
        assert v.accept, v
        if good:
            self.answer(src, call_id, cseq, 200, expires)
            return None
        if fail_status == 401:
            return self.challenge(src, call_id, cseq)
        self.answer(src, call_id, cseq, fail_status)
        return None

    def login(self, src: str, aor: str, *, mistakes: int = 0) -> None:
        call_id, cseq, nonce = self.first_challenge(src, aor)
        for _ in range(mistakes):
            nonce = self.attempt(src, aor, call_id, cseq, nonce, good=False)
            cseq += 1
        self.attempt(src, aor, call_id, cseq, nonce, good=True)

    def fail_times(self, src: str, aor: str, n: int, status: int = 401) -> None:
        call_id, cseq, nonce = self.first_challenge(src, aor)
        for _ in range(n):
            fresh = self.attempt(src, aor, call_id, cseq, nonce, good=False, fail_status=status)
            nonce = fresh or nonce
            cseq += 1

    def bans(self) -> list[Ban]:
        return [a for a in self.actions if isinstance(a, Ban)]


def cfg_with(**sections: object) -> Config:
    return replace(Config(), **sections)

