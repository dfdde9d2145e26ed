"""The lane: the Redis components' own connection for sequential calls (omniq_redis.lane.Lane).

It bypasses redis-py's connection, so what redis-py would do for it is checked
here against the real server: the URL's database, a reply that never comes,
a call cancelled between send and reply, and error replies.
"""

from __future__ import annotations

import anyio
import pytest
import redis.asyncio as aioredis

from omniq.errors import BackendError, BackendUnavailableError
from omniq.testing import make_task
from omniq_redis import RedisTaskQueue
from tests.faults.tcpproxy import TcpProxy

pytestmark = [pytest.mark.servers, pytest.mark.anyio]


def _with_db(url: str, db: int) -> str:
    base, _, last = url.rpartition("/")
    return f"{base}/{db}" if last.isdigit() else f"{url.rstrip('/')}/{db}"


async def test_the_lane_uses_the_database_of_the_url(redis_url, prefix):
    url = _with_db(redis_url, 7)
    raw7 = aioredis.Redis.from_url(url)
    raw_default = aioredis.Redis.from_url(redis_url)
    try:
        async with RedisTaskQueue(url, prefix=prefix) as queue:
            assert queue._connection.current.lane is not None, "sequential calls go through the lane"
            task_id = await queue.enqueue(make_task())
            assert [key async for key in raw7.scan_iter(match=f"*{prefix}*{task_id}*")]
            assert not [key async for key in raw_default.scan_iter(match=f"*{prefix}*{task_id}*")]
            stored = await queue.get(task_id)
            assert stored is not None and stored.id == task_id
            await queue.purge()
    finally:
        await raw7.aclose()
        await raw_default.aclose()


async def test_a_reply_that_never_comes_fails_within_the_socket_timeout_and_the_lane_recovers(redis_url, prefix):
    proxy = TcpProxy(redis_url, 6379)
    await proxy.start()
    try:
        async with RedisTaskQueue(proxy.url, prefix=prefix, socket_timeout=0.5) as queue:
            await queue.enqueue(make_task())
            proxy.stalled = True
            with anyio.fail_after(10):  # generous: the lane's watchdog fires after 0.5 s
                with pytest.raises(BackendUnavailableError):
                    await queue.enqueue(make_task())
            proxy.stalled = False
            task_id = await queue.enqueue(make_task())
            stored = await queue.get(task_id)
            assert stored is not None and stored.id == task_id
            await queue.purge()
    finally:
        await proxy.stop()


async def test_a_call_cancelled_before_its_reply_never_hands_that_reply_to_the_next_call(redis_url, prefix, raw):
    async with RedisTaskQueue(redis_url, prefix=prefix) as queue:
        blocking = queue._blocking.current
        signal = f"{prefix}:lane-test"
        with anyio.move_on_after(0.2):
            await blocking.pipeline([("BLPOP", signal, 5)], timeout=10)
        await raw.rpush(signal, "late")  # would answer the cancelled BLPOP, had its connection survived
        assert await blocking.pipeline([("PING",)], timeout=10) == [b"PONG"]
        assert await blocking.pipeline([("LPOP", signal)], timeout=10) == [b"late"]


async def test_an_error_reply_raises_and_keeps_the_connection(queue):
    lane = queue._connection.current.lane
    assert lane is not None
    await queue.enqueue(make_task())
    protocol = lane._protocol
    with pytest.raises(BackendError, match="ERR"):
        await queue._run("get", [], ["a", "b"])  # no prefix argument: the script fails, an error reply
    assert lane._protocol is protocol and protocol.transport is not None
    assert await queue.count() == 1


async def test_blocking_calls_reuse_their_connection_and_replace_one_the_server_dropped(queue, raw):
    """The sync API's transport (omniq_redis.blocking) keeps redis-py's pool safety without its pool."""
    blocking = queue._connection.current.blocking

    def connection_id() -> int:
        [reply] = blocking.call([("CLIENT", "ID")])
        return int(reply)

    first = await anyio.to_thread.run_sync(connection_id)
    assert await anyio.to_thread.run_sync(connection_id) == first  # the idle connection is taken again
    await raw.client_kill_filter(_id=str(first))
    with anyio.fail_after(10):
        while f"id={first} " in (await raw.execute_command("CLIENT", "LIST")).decode():
            await anyio.sleep(0.05)
    task = make_task()
    assert await anyio.to_thread.run_sync(queue.enqueue_blocking, [task]) == [task.id]  # not a dead socket's error
    assert await queue.get(task.id) is not None
    assert await anyio.to_thread.run_sync(connection_id) != first
    [error] = await anyio.to_thread.run_sync(blocking.call, [("NOSUCHCOMMAND",)])
    assert isinstance(error, Exception)  # an error reply is returned, and the connection kept
    assert await anyio.to_thread.run_sync(connection_id) != first
