"""The Redis backend against the conformance suite (one fresh key prefix per test)."""

from __future__ import annotations

import uuid

import msgspec
import pytest
import redis.asyncio as aioredis

from omniq.testing import EventStorageSuite, ResultStorageSuite, TaskQueueSuite
from omniq_redis import RedisEventStorage, RedisResultStorage, RedisTaskQueue, keys

pytestmark = pytest.mark.servers


@pytest.fixture
async def prefix(redis_url):
    name = f"omniq-test-{uuid.uuid4().hex[:12]}"
    yield name
    client = aioredis.Redis.from_url(redis_url)
    try:
        # Every key of the prefix contains it: "{P:q}:...", "{P}:...", "P:r:..." and "P:events".
        doomed = [key async for key in client.scan_iter(match=f"*{name}*", count=1000)]
        if doomed:
            await client.unlink(*doomed)
    finally:
        await client.aclose()


#: a value per corruptible field that a task envelope can hold but no task can have
#: (a naive datetime is what msgspec writes as a string without an offset).
_CORRUPT = {"expires_at": "2030-01-01T00:00:00", "result_ttl": float("inf"), "error": "not an error", "depends_on": 7}


class TestRedisTaskQueue(TaskQueueSuite):
    @pytest.fixture
    def task_queue_factory(self, redis_url, prefix):
        return lambda: RedisTaskQueue(redis_url, prefix=prefix)

    @pytest.fixture
    async def corrupt_record(self, redis_url, prefix):
        """Rewrites a task's stored envelope (hash field ``b``) with one field corrupted."""
        client = aioredis.Redis.from_url(redis_url)

        async def corrupt(task_id, field):
            key = keys.QueueKeys(prefix, "default").task(task_id)
            raw = await client.hget(key, "b")
            assert isinstance(raw, bytes)
            fields = msgspec.msgpack.decode(raw)
            fields[field] = _CORRUPT[field]
            await client.hset(key, "b", msgspec.msgpack.encode(fields))

        yield corrupt
        await client.aclose()

    @pytest.fixture
    def fused_result_storage_factory(self, redis_url, prefix):
        return lambda: RedisResultStorage(redis_url, prefix=prefix)


class TestRedisResultStorage(ResultStorageSuite):
    @pytest.fixture
    def result_storage_factory(self, redis_url, prefix):
        return lambda: RedisResultStorage(redis_url, prefix=prefix)


class TestRedisEventStorage(EventStorageSuite):
    @pytest.fixture
    def event_storage_factory(self, redis_url, prefix):
        return lambda: RedisEventStorage(redis_url, prefix=prefix)
