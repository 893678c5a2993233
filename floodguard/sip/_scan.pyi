"""Types of the C module floodguard.sip._scan (see _scan.c)."""

class Credentials:
    scheme: str
    username: str | None
    nonce: str | None

class Challenge:
    scheme: str
    nonce: str | None
    stale: bool

class SipView:
    is_request: bool
    method: str | None
    status: int | None
    call_id: str | None
    cseq_num: int | None
    cseq_method: str | None
    aor: str | None
    user_agent: str | None
    authorization: Credentials | None
    challenges: tuple[Challenge, ...]
    granted_expires: int | None

def scan_sip(data: bytes, /) -> SipView | None: ...
def scan_packet(data: bytes, /) -> tuple[str, str, str, int, int, SipView] | None: ...
