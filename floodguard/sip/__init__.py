"""Pure SIP handling: a fast bytes parser (`message`) and digest authentication (`digest`)."""

from floodguard.sip.message import (
    Contact,
    DigestChallenge,
    DigestCredentials,
    SipMessage,
    SipParseError,
    parse_message,
)

__all__ = [
    "Contact",
    "DigestChallenge",
    "DigestCredentials",
    "SipMessage",
    "SipParseError",
    "parse_message",
]
