"""The only code that touches the kernel: ruleset rendering, iptables backends, ipsets.

- ``rules``: renders the TOML templates (package data, ``floodguard/rules/``) into
  backend-neutral rules (pure, no root).
- ``iptables``: the nft and legacy backends (``iptables-nft-restore``, ``iptables-legacy-restore``).
- ``ipset``: the floodguard sets through pyroute2 (``SetManager``) and the state-store restore hook.
- ``firewall``: ``apply`` / ``remove`` / ``status`` used by the CLI, atomic and idempotent.
- ``conntrack``: forgetting a banned source's connections.
- ``nfqueue``: the NFQUEUE receive loop the guard runs.

Importing this package imports no kernel library; the submodules do that lazily.
"""

from __future__ import annotations

from floodguard.errors import FloodguardError, PermissionDenied


class KernelError(FloodguardError):
    """A kernel operation failed; the message is one line, fit for the CLI."""


class NotRootError(KernelError, PermissionDenied):
    """The operation needs root (CAP_NET_ADMIN); exits 5 like every `PermissionDenied`."""


class SetFullError(KernelError):
    """An ipset reached its maxelem; the element was not added."""

    def __init__(self, set_name: str, address: str) -> None:
        self.set_name = set_name
        self.address = address
        super().__init__(f"ipset {set_name} is full: {address} was not added")


__all__ = ["KernelError", "NotRootError", "SetFullError"]
