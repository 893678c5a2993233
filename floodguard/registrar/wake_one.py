"""An epoll selector for the registrar workers' event loops that registers the shared UDP sockets
with EPOLLEXCLUSIVE: a datagram then wakes one idle worker, as a blocking read in each of
Kamailio's children does, instead of every worker (all but one then find nothing to read).

It has to be the loop's own epoll: one nested in it is woken, but the kernel hands an exclusive
wakeup on only when a task sleeps on that very epoll, so every worker would wake again. It is a
whole selector (``selectors.BaseSelector``) over its own ``select.epoll`` rather than a subclass
of the standard one, whose epoll object is private.
"""

from __future__ import annotations

import contextlib
import errno
import math
import select
import selectors
from collections.abc import Iterator, Mapping
from typing import Any

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE


def _fd(fileobj: Any) -> int:
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"invalid file descriptor: {fd}")
    return fd


class _KeyMap(Mapping[Any, selectors.SelectorKey]):
    """The registered file objects and their keys (``get_map``)."""

    def __init__(self, selector: WakeOneEpoll) -> None:
        self._selector = selector

    def __len__(self) -> int:
        return len(self._selector.keys)

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        return self._selector.get_key(fileobj)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._selector.keys)


class WakeOneEpoll(selectors.BaseSelector):
    """An epoll selector; a descriptor in ``exclusive`` watched for reading only is registered
    with EPOLLEXCLUSIVE (on a kernel before 4.5, which refuses the flag, without it)."""

    def __init__(self, exclusive: set[int]) -> None:
        self.exclusive = exclusive
        self.flag = int(getattr(select, "EPOLLEXCLUSIVE", 0))
        self.keys: dict[int, selectors.SelectorKey] = {}
        self._epoll = select.epoll()
        self._map = _KeyMap(self)

    def _lookup(self, fileobj: Any) -> int:
        try:
            return _fd(fileobj)
        except ValueError:  # a closed socket: find it by identity, as the standard selectors do
            for key in self.keys.values():
                if key.fileobj is fileobj:
                    return key.fd
            raise

    def _add(self, fd: int, events: int) -> None:
        mask = (select.EPOLLIN if events & EVENT_READ else 0) | (
            select.EPOLLOUT if events & EVENT_WRITE else 0)
        if self.flag and fd in self.exclusive and events == EVENT_READ:
            try:
                self._epoll.register(fd, mask | self.flag)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
        self._epoll.register(fd, mask)

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        if not events or events & ~(EVENT_READ | EVENT_WRITE):
            raise ValueError(f"invalid events: {events!r}")
        fd = self._lookup(fileobj)
        if fd in self.keys:
            raise KeyError(f"{fileobj!r} (fd {fd}) is already registered")
        self._add(fd, events)
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self.keys[fd] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        key = self.get_key(fileobj)
        del self.keys[key.fd]
        with contextlib.suppress(OSError):  # already closed: the kernel dropped it from the set
            self._epoll.unregister(key.fd)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = self.get_key(fileobj)
        if events != key.events:
            if key.fd in self.exclusive:  # EPOLL_CTL_MOD refuses an exclusive entry
                self.unregister(fileobj)
                return self.register(fileobj, events, data)
            if not events or events & ~(EVENT_READ | EVENT_WRITE):
                raise ValueError(f"invalid events: {events!r}")
            mask = (select.EPOLLIN if events & EVENT_READ else 0) | (
                select.EPOLLOUT if events & EVENT_WRITE else 0)
            self._epoll.modify(key.fd, mask)
        key = selectors.SelectorKey(key.fileobj, key.fd, events, data)
        self.keys[key.fd] = key
        return key

    def select(self, timeout: float | None = None
               ) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            wait = -1.0
        elif timeout <= 0:
            wait = 0.0
        else:  # epoll counts milliseconds: round up, or a short timeout would spin
            wait = math.ceil(timeout * 1e3) * 1e-3
        try:
            ready = self._epoll.poll(wait, max(len(self.keys), 1))
        except InterruptedError:
            return []
        out: list[tuple[selectors.SelectorKey, int]] = []
        for fd, bits in ready:
            key = self.keys.get(fd)
            if key is None:
                continue
            events = 0
            if bits & ~select.EPOLLIN:  # writable, or an error/hangup a writer must see
                events |= EVENT_WRITE
            if bits & ~select.EPOLLOUT:
                events |= EVENT_READ
            if events & key.events:
                out.append((key, events & key.events))
        return out

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            return self.keys[self._lookup(fileobj)]
        except KeyError:
            raise KeyError(f"{fileobj!r} is not registered") from None

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._map

    def close(self) -> None:
        self.keys.clear()
        self._epoll.close()
