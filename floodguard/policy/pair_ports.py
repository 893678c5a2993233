"""Where each known-good pair registers from over UDP: what a lockdown lets through in the kernel.

A source in lockdown (issue #16 item 3) is a shared address whose phones must keep working while
a guesser behind it is stopped. The guard does that per REGISTER; the kernel can do it for
every packet when it knows each known-good pair's UDP (address, port): NAT keeps a phone's
mapping stable while it keeps registering. ``PairPorts`` remembers the (address, port) that
each pair's last 2xx answer went to — only answers count, so a spoofed request can never move a
pair's port — and at a lockdown says which entries the kernel's pass set needs.

When it cannot vouch for every live pair of the source (a pair registered over TCP, whose port
changes with each connection; a pair learned before a restart; a table that overflowed), it
answers None: the guard alone enforces that lockdown, rather than the kernel dropping a
neighbour's phone.

Pure: no I/O, no clock; bounded (``cap`` pairs in all, the whole table dropped when full, which
only sends later lockdowns to the guard).
"""

from __future__ import annotations

from collections.abc import Iterable


class PairPorts:
    """(source key, AOR) -> the UDP (address, port) and until of its last 2xx."""

    __slots__ = ("_by_source", "_size", "cap")

    def __init__(self, cap: int = 200_000) -> None:
        self._by_source: dict[str, dict[str, tuple[str, int, float]]] = {}
        self._size = 0
        self.cap = cap

    def __len__(self) -> int:
        return self._size

    def note(self, src: str, aor: str, peer: str, port: int, until: float) -> None:
        """A 2xx for (src, aor) went to UDP ``peer``:``port``; the pair is known until ``until``."""
        ports = self._by_source.get(src)
        if ports is None:
            if self._size >= self.cap:
                self._by_source.clear()
                self._size = 0
            ports = {}
            self._by_source[src] = ports
        if aor not in ports:
            self._size += 1
        ports[aor] = (peer, port, until)

    def forget(self, src: str, aor: str) -> None:
        """The pair answered over TCP (or lost its mark): its UDP port says nothing now."""
        ports = self._by_source.get(src)
        if ports is not None and ports.pop(aor, None) is not None:
            self._size -= 1
            if not ports:
                del self._by_source[src]

    def passes(self, now: float, src: str, live: Iterable[str]) -> list[tuple[str, int]] | None:
        """The (address, port) of each of ``live`` (src's live known-good AORs), or None when
        one of them has no current UDP port here, or there is none (a ``[[gateway]]`` is
        shared-capable without pairs: only the guard can tell its phones apart)."""
        ports = self._by_source.get(src, {})
        out: list[tuple[str, int]] = []
        for aor in live:
            found = ports.get(aor)
            if found is None or found[2] <= now:
                return None
            if (found[0], found[1]) not in out:
                out.append((found[0], found[1]))
        return out or None
