"""Attack: a bare CR inside a header line (issue 13, items 1 and 4).

Framing: a bare-LF REGISTER "from" the victim with ``Call-ID: x\\rWWW-Authenticate: Digest
nonce="K"``: a registrar that echoes the Call-ID and a reader that splits lines on CR would
see nonce K issued to the victim. Evasion: a guesser with ``\\rx`` in every Call-ID, so that
request and answer never match in the guard and no failure is counted. Every reader now
rejects such a message: the guard drops it unread (malformed:control_char), so the registrar
never answers it, nothing is counted against the victim and the guesser gets no answer at all.
"""

from __future__ import annotations

import json

import pytest

from tests.adversarial.counterkit import published_verdicts
from tests.integration.conftest import CLIENTS4, SERVER4
from tests.integration.guardkit import GuardLab, start

pytestmark = pytest.mark.root("ip", "ipset", "iptables-nft-save", "iptables-legacy-save",
                              "kamailio", "sipp")

ATTACKER, VICTIM = CLIENTS4[0], CLIENTS4[1]

SEND = r'''
import json, socket, sys
src, dst, kind, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 5096)); s.settimeout(0.15)
answers = 0
for i in range(count):
    if kind == "frame":
        call_id = 'x%d\rWWW-Authenticate: Digest realm="r", nonce="K"' % i
        auth = "" if i == 0 else (
            'Authorization: Digest username="1002", realm="r", nonce="K", '
            'uri="sip:%s", response="%032x"\n' % (dst, i))
    else:
        call_id = "guess-%d\rx" % i
        auth = ('Authorization: Digest username="1002", realm="%s", nonce="n%d", '
                'uri="sip:%s", response="%032x"\n' % (dst, i, dst, i))
    msg = ("REGISTER sip:%s SIP/2.0\nVia: SIP/2.0/UDP %s:5096;branch=z9hG4bK-cr%d\n"
           "From: <sip:1002@%s>;tag=t%d\nTo: <sip:1002@%s>\nCall-ID: %s\n"
           "CSeq: %d REGISTER\nMax-Forwards: 70\n%sContent-Length: 0\n\n") % (
        dst, src, i, dst, i, dst, call_id, i + 1, auth)
    s.sendto(msg.encode(), (dst, 5060))
    try:
        s.recv(65535); answers += 1
    except OSError:
        pass
s.settimeout(0.5)  # a late answer to any of them is still counted
try:
    while True:
        s.recv(65535); answers += 1
except OSError:
    pass
print(json.dumps({"sent": count, "answers": answers}))
'''


@pytest.mark.parametrize("registrar", ["kamailio", "floodguard"])
def test_bare_cr_neither_frames_nor_evades(glab: GuardLab, registrar: str) -> None:
    start(glab, registrar=registrar)
    framed = json.loads(glab.client.run("python3", "-c", SEND, VICTIM, SERVER4, "frame",
                                        "8").stdout)
    guessed = json.loads(glab.client.run("python3", "-c", SEND, ATTACKER, SERVER4, "guess",
                                         "10").stdout)
    # nothing with a bare CR reaches the registrar: no answer at all
    assert framed["answers"] == 0 and guessed["answers"] == 0, (framed, guessed)
    verdicts = published_verdicts(glab.tmp / "state.db")
    assert verdicts.get("drop:malformed:control_char", 0) == 18, verdicts
    assert VICTIM not in glab.ban_set()
    assert not [e for e in glab.events() if e["event"] in ("suspend", "ban")]
    # the victim is a real phone and keeps registering
    result = glab.sipp_register(VICTIM, [("1002", "secret1002")], calls=2, rate=2, port=5071)
    assert result["successful"] == 2 and result["failed"] == 0
