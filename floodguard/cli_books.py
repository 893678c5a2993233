"""What the operator commands open: the state store and, when root, the kernel sets, as the
``BanBook`` (bans: ``floodguard blacklist``) and ``AllowBook`` (the run-time allow list:
``floodguard allow``) they work on. Tests replace ``ban_book`` to leave the kernel out."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from floodguard import config as configmod
from floodguard.cli import one_line

if TYPE_CHECKING:
    from floodguard.allows import AllowBook
    from floodguard.bans import BanBook
    from floodguard.kernel.ipset import SetManager


def kernel_sets(cfg: configmod.Config, *, need_kernel: bool) -> SetManager | None:
    """This node's kernel sets when root (created if missing when ``need_kernel``); without
    root or the sets: an error when ``need_kernel``, else a warning and None."""
    from floodguard.kernel import KernelError, firewall

    try:
        firewall.require_root()
        from floodguard.kernel.ipset import SetManager
        from floodguard.kernel.rules import render

        sets = SetManager(render(cfg).sets)
        if need_kernel:
            sets.ensure()
        return sets
    except (KernelError, OSError) as exc:
        if need_kernel:
            raise
        click.echo(f"floodguard: warning: kernel sets not read: {one_line(exc)}", err=True)
        return None


def ban_book(cfg: configmod.Config, need_kernel: bool) -> BanBook:
    """The operator's BanBook: the store, and the kernel sets (see kernel_sets); allow-list
    checks include the run-time allow list."""
    from floodguard import allows
    from floodguard.bans import BanBook
    from floodguard.store import Store

    store = Store(cfg.state.path)
    return BanBook(allows.effective(cfg, store), store, kernel_sets(cfg, need_kernel=need_kernel))


def allow_book(cfg: configmod.Config, need_kernel: bool) -> AllowBook:
    """The operator's AllowBook, over the same store and sets as ban_book."""
    from floodguard.allows import AllowBook

    return AllowBook(cfg, ban_book(cfg, need_kernel))
