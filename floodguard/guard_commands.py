"""What a guard worker does with each queued command: operators' (``floodguard blacklist``,
``allow``), feeds' and the fleet's changes, so the worker's engine holds what the store holds.

The command queue (store table ``commands``) carries (op, ip, seconds, reason); the ops:

=============  ==========================================================================
ban            ip banned for seconds (reason)
unban          ip's ban lifted, with its endpoint suspensions and lockdown
lift-pair      the suspension of (ip, AOR in reason) lifted
unprotect      the protection of the account in ip lifted
pair           (ip, AOR in reason) known-good for seconds (the fleet)
suspend-pair   (ip, AOR in reason) suspended for seconds (the fleet)
protect        the account in ip protected for seconds, level in reason (the fleet)
lockdown       ip in lockdown for seconds, level in reason (the fleet)
unlock         ip's lockdown lifted (the fleet)
allow          the run-time allow list changed (the guard re-reads it)
=============  ==========================================================================

Store rows and events are written by whoever queued the command; this only updates the engine.
"""

from __future__ import annotations

from floodguard.policy.engine import Engine
from floodguard.policy.pairs import aor_key
from floodguard.store import Command


def _level(text: str | None) -> int:
    return int(text) if text is not None and text.isdigit() and 0 < int(text) <= 64 else 1


def run_command(engine: Engine, cmd: Command, now: float) -> bool:
    """Apply one command to the engine; True when the allow list must be re-read. Raises
    ValueError for a command the engine refuses (e.g. a ban of an allow-listed address)."""
    op, seconds = cmd.op, cmd.seconds or 0.0
    if op == "allow":
        return True
    if op == "ban" and seconds:
        engine.restore_ban(now, cmd.ip, seconds, cmd.reason or "manual", "manual", None, 0)
    elif op == "unban":
        engine.unban(now, cmd.ip)  # its endpoints too (store: by the CLI)
    elif op == "lift-pair" and cmd.reason:
        engine.pairs.lift(cmd.ip, aor_key(cmd.reason))
    elif op == "unprotect":
        # whoever queued it already ended it in the store, with its event
        engine.lift_account(now, cmd.ip)
    elif op == "pair" and cmd.reason:
        engine.restore_pair(now, cmd.ip, cmd.reason, seconds)
    elif op == "suspend-pair" and cmd.reason:
        engine.restore_pair(now, cmd.ip, cmd.reason, seconds, (0, 1))
    elif op == "protect":
        engine.restore_account(now, cmd.ip, seconds, _level(cmd.reason))
    elif op == "lockdown":
        engine.restore_lockdown(now, cmd.ip, seconds, _level(cmd.reason))
    elif op == "unlock":
        engine.lockdowns.lift(now, cmd.ip)
    return False
