"""The lab's SIP accounts and constants (the messages are built by `floodguard.sip.build`).

The lab's accounts are generated: phone ``i`` is user ``10000 + i`` with password
``lab<user>pw``; the attackers own one valid account of their own (``ATTACKER_USER``), which the
hijack scenario uses to try to overwrite a victim's binding with real credentials.
"""

from __future__ import annotations

from collections.abc import Iterable

FIRST_USER = 10000
ATTACKER_USER = "9999"
ATTACKER_PASSWORD = "attacker-own-password"
PHONE_AGENT = "Yealink SIP-T46S 66.86.0.15"
SIP_PORT = 5060
REALM = "floodguard-lab"


def phone_user(index: int) -> str:
    """The account of phone ``index``."""
    return str(FIRST_USER + index)


def password(user: str) -> str:
    """The password of a lab account (the attacker's own account included)."""
    return ATTACKER_PASSWORD if user == ATTACKER_USER else f"lab{user}pw"


def accounts_toml(users: Iterable[str]) -> str:
    """An accounts file for floodguard's registrar: the given users plus the attacker's own."""
    out = []
    for user in [*users, ATTACKER_USER]:
        out.append(f'[[account]]\nuser = "{user}"\npassword = "{password(user)}"\n')
    return "\n".join(out)
