"""The registrar workers' selector (floodguard.registrar.wake_one) on the real kernel's epoll: a
datagram on a shared socket wakes one of the loops sleeping on it, not all (the same loops
without the flag all wake, so the check can fail), and an asyncio loop on it serves readers,
writers, a reader and a writer on one descriptor, and TCP streams."""

from __future__ import annotations

import asyncio
import selectors
import socket
import threading
import time

from floodguard.registrar.wake_one import WakeOneEpoll

SLEEP = 1.5


def _woken(exclusive: bool) -> list[bool]:
    """Two selectors sleep on one UDP socket; one datagram arrives. Which of them woke?"""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    selectors_ = [WakeOneEpoll({sock.fileno()} if exclusive else set()) for _ in range(2)]
    for sel in selectors_:
        sel.register(sock, selectors.EVENT_READ)
    woke = [False, False]
    sleeping = threading.Barrier(3)

    def wait(i: int) -> None:
        sleeping.wait()
        woke[i] = bool(selectors_[i].select(SLEEP))

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    try:
        sleeping.wait()
        time.sleep(0.3)  # both are inside epoll_wait by now
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"x", sock.getsockname())
    finally:
        for thread in threads:
            thread.join()
        for sel in selectors_:
            sel.close()
        sock.close()
    return woke


def test_a_datagram_wakes_one_sleeping_worker_not_all() -> None:
    for _ in range(3):
        assert sorted(_woken(exclusive=True)) == [False, True]
    # the control: without EPOLLEXCLUSIVE both wake for the one datagram
    assert _woken(exclusive=False) == [True, True]


def test_an_asyncio_loop_on_it_serves_readers_writers_and_streams() -> None:
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    left, right = socket.socketpair()
    left.setblocking(False)
    selector = WakeOneEpoll({udp.fileno(), left.fileno()})

    async def main() -> None:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()
        loop.add_reader(udp, lambda: got.set_result(udp.recv(100)))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"datagram", udp.getsockname())
        assert await asyncio.wait_for(got, 2) == b"datagram"
        assert loop.remove_reader(udp)
        # a reader and a writer on one exclusive descriptor (modify re-registers it)
        readable: asyncio.Future[bytes] = loop.create_future()
        writable: asyncio.Future[None] = loop.create_future()
        loop.add_reader(left, lambda: readable.done() or readable.set_result(left.recv(100)))
        loop.add_writer(left, lambda: writable.done() or writable.set_result(None))
        await asyncio.wait_for(writable, 2)
        assert loop.remove_writer(left)
        right.send(b"pair")
        assert await asyncio.wait_for(readable, 2) == b"pair"
        assert loop.remove_reader(left)
        assert not loop.remove_reader(left)

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(await reader.readexactly(200_000))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"s" * 200_000)
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(200_000), 5) == b"s" * 200_000
        writer.close()
        server.close()
        await server.wait_closed()

    with asyncio.Runner(loop_factory=lambda: asyncio.SelectorEventLoop(selector)) as runner:
        runner.run(main())
    assert selector.keys == {}  # the runner closed the loop, which closed the selector
    for sock in (udp, left, right):
        sock.close()
