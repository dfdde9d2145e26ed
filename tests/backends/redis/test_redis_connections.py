"""Connection handling: error translation, password redaction, the eviction-policy warning."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import sys

import anyio
import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from omniq.config import Settings
from omniq.errors import BackendUnavailableError, ConfigurationError
from omniq.plugins import resolve_backend
from omniq.testing import make_task
from omniq_redis import RedisEventStorage, RedisResultStorage, RedisTaskQueue

pytestmark = [pytest.mark.servers, pytest.mark.anyio]

UNREACHABLE = "redis://omniq:hunter2-not-real@127.0.0.1:1/0"


async def _policy(admin: aioredis.Redis) -> str:
    reply = await admin.config_get("maxmemory-policy")
    value = {k.decode() if isinstance(k, bytes) else k: v for k, v in reply.items()}["maxmemory-policy"]
    assert isinstance(value, (bytes, str))
    return value.decode() if isinstance(value, bytes) else value


@pytest.mark.parametrize("component", [RedisTaskQueue, RedisResultStorage, RedisEventStorage])
async def test_unreachable_server_is_backend_unavailable_without_the_password(component):
    instance = component(UNREACHABLE)
    with pytest.raises(BackendUnavailableError) as caught:
        await instance.connect()
    assert "hunter2-not-real" not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)
    assert "hunter2-not-real" not in repr(instance)
    await instance.close()
    await instance.close()  # idempotent


async def _count_or_unavailable(queue: RedisTaskQueue) -> int | str:
    try:
        return await queue.count()
    except BackendUnavailableError:  # the only error allowed to surface
        return "unavailable"


async def test_connections_killed_by_the_server_never_leak_driver_errors(redis_url, prefix):
    queue = RedisTaskQueue(redis_url, prefix=prefix, client_name=prefix)
    await queue.connect()
    try:
        assert await queue.count() == 0
        admin = aioredis.Redis.from_url(redis_url)
        try:
            mine = [client["id"] for client in await admin.client_list() if client.get("name") == prefix]
            assert mine, "the queue's connections carry its client name"
            for client_id in mine:
                await admin.client_kill_filter(_id=client_id)
        finally:
            await admin.aclose()
        outcomes = [await _count_or_unavailable(queue) for _ in range(3)]
        assert outcomes[-1] == 0, "the pool reconnects once the server is back"
    finally:
        await queue.close()


def test_non_redis_urls_are_a_configuration_error():
    with pytest.raises(ConfigurationError, match="redis://"):
        RedisTaskQueue("postgresql://user:secret@localhost/db")


def test_from_settings_reads_prefix_and_url():
    settings = Settings(backend="redis", url="redis://127.0.0.1:6379/3", key_prefix="myapp", event_ttl=60)
    queue = resolve_backend("task_queue", "redis").from_settings(settings.component("task_queue"), settings)
    events = resolve_backend("event_storage", "redis").from_settings(settings.component("event_storage"), settings)
    assert isinstance(queue, RedisTaskQueue) and queue.prefix == "myapp" and queue.url.endswith("/3")
    assert isinstance(events, RedisEventStorage) and events.ttl == 60


async def test_evicting_maxmemory_policy_is_warned_about(redis_url, prefix, caplog):
    admin = aioredis.Redis.from_url(redis_url)
    try:
        try:
            original = await _policy(admin)
        except ResponseError:
            pytest.skip("CONFIG is disabled on this Redis")
        await admin.config_set("maxmemory-policy", "allkeys-lru")
        try:
            with caplog.at_level(logging.WARNING, logger="omniq.redis"):
                async with RedisTaskQueue(redis_url, prefix=prefix):
                    pass
        finally:
            await admin.config_set("maxmemory-policy", original)
        assert await _policy(admin) == original
    finally:
        await admin.aclose()
    warnings = [record for record in caplog.records if record.name == "omniq.redis"]
    assert len(warnings) == 1
    assert "allkeys-lru" in warnings[0].getMessage()
    assert "noeviction" in warnings[0].getMessage()


async def test_noeviction_policy_is_not_warned_about(redis_url, prefix, caplog):
    admin = aioredis.Redis.from_url(redis_url)
    try:
        policy = await _policy(admin)
    finally:
        await admin.aclose()
    if policy != "noeviction":
        pytest.skip("the test server does not run with noeviction")
    with caplog.at_level(logging.WARNING, logger="omniq.redis"):
        async with RedisTaskQueue(redis_url, prefix=prefix):
            pass
    assert not [record for record in caplog.records if record.name == "omniq.redis"]


async def test_a_script_call_right_after_the_server_closed_idle_connections_succeeds(redis_url, prefix):
    """The lane (sequential script calls outside the pool) notices a closed idle connection before
    sending, as the pool does, so the first enqueue after a restart or a kill does not fail."""
    queue = RedisTaskQueue(redis_url, prefix=prefix, client_name=prefix)
    await queue.connect()
    try:
        await queue.enqueue(make_task())
        admin = aioredis.Redis.from_url(redis_url)
        try:
            mine = [client["id"] for client in await admin.client_list() if client.get("name") == prefix]
            for client_id in mine:
                await admin.client_kill_filter(_id=client_id)
        finally:
            await admin.aclose()
        await anyio.sleep(0.2)  # the close reaches this side
        await queue.enqueue(make_task())
        assert await queue.count() == 2
    finally:
        await queue.purge()
        await queue.close()


def _child_enqueues_through_inherited_components(queue, task, out):
    async def main():
        inherited = queue._connection._client
        await queue.enqueue(task)  # the parent's client (pool and lane) is not used: the child opens its own
        own = queue._connection.current
        await queue.close()
        return own is not inherited

    out.send(asyncio.run(main()))


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
async def test_a_forked_child_uses_a_client_of_its_own_and_leaves_the_parents_open(queue):
    await queue.enqueue(make_task(queue="fork"))  # the parent's lane is connected
    client = queue._connection.current
    assert client.lane is not None
    protocol = client.lane._protocol
    task = make_task(queue="fork")
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child_enqueues_through_inherited_components, args=(queue, task, sender))
    child.start()
    assert await anyio.to_thread.run_sync(receiver.poll, 30)
    assert receiver.recv() is True
    await anyio.to_thread.run_sync(child.join, 30)
    assert child.exitcode == 0
    assert queue._connection.current is client, "the child closed only its own client"
    assert client.lane._protocol is protocol and protocol is not None and protocol.transport is not None
    await queue.enqueue(make_task(queue="fork"))  # through the parent's lane, still open
    assert client.lane._protocol is protocol
    claimed = await queue.claim_ready(["fork"], 5, lease=30, worker_id="w")
    assert task.id in {t.id for t in claimed} and len(claimed) == 3
