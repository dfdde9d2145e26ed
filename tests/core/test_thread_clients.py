"""omniq.thread_clients: a client per calling thread, on that thread's own loop (the blocking transport)."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest

from omniq.thread_clients import ThreadClients


class LoopClient:
    """A client bound to the loop that opened it, as an asyncpg connection or a nats-py client is."""

    def __init__(self, opened: list[LoopClient]) -> None:
        self.loop = asyncio.get_running_loop()
        self.thread = threading.get_ident()
        self.calls = 0
        self.closed = False
        opened.append(self)

    async def call(self, fail: bool = False) -> LoopClient:
        assert asyncio.get_running_loop() is self.loop, "used on another loop than its own"
        assert not self.closed
        await asyncio.sleep(0)
        self.calls += 1
        if fail:
            raise ConnectionError("the server went away")
        return self

    async def close(self) -> None:
        assert asyncio.get_running_loop() is self.loop
        self.closed = True


def clients(opened: list[LoopClient], **options: float) -> ThreadClients[LoopClient]:
    async def open_client() -> LoopClient:
        return LoopClient(opened)

    async def close_client(client: LoopClient) -> None:
        await client.close()

    return ThreadClients(open_client, close_client, **options)


def test_each_thread_keeps_a_client_of_its_own_and_close_closes_them_all() -> None:
    opened: list[LoopClient] = []
    pool = clients(opened)

    def three_calls() -> set[int]:
        return {id(pool.run(lambda c: c.call())) for _ in range(3)}

    with ThreadPoolExecutor(4) as executor:
        used = list(executor.map(lambda _: three_calls(), range(4)))
    assert all(len(ids) == 1 for ids in used)  # one client per thread, reused by its calls
    assert len(opened) == len({c.thread for c in opened}) == len({id(c.loop) for c in opened})
    assert sum(c.calls for c in opened) == 12

    async def owner_closes() -> None:  # the owning component closes from its coroutine
        await pool.aclose()

    anyio.run(owner_closes)
    assert all(c.closed and c.loop.is_closed() for c in opened)
    assert pool.run(lambda c: c.call()) is opened[-1]  # a later call (a reconnected owner) opens anew
    assert len(opened) == len({id(c) for c in opened}) and not opened[-1].closed
    pool.close()


def test_a_failed_call_drops_its_client_and_an_idle_one_is_replaced() -> None:
    opened: list[LoopClient] = []
    pool = clients(opened, max_idle=0.2)
    first = pool.run(lambda c: c.call())
    with pytest.raises(ConnectionError):
        pool.run(lambda c: c.call(fail=True))
    assert first.closed
    second = pool.run(lambda c: c.call())
    assert second is not first and pool.run(lambda c: c.call()) is second
    time.sleep(0.3)
    third = pool.run(lambda c: c.call())
    assert third is not second and second.closed
    pool.close()
    assert third.closed
