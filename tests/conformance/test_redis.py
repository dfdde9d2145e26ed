"""The Redis backend against the conformance suite (one fresh key prefix per test)."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from omniq.testing import EventStorageSuite, ResultStorageSuite, TaskQueueSuite
from omniq_redis import RedisEventStorage, RedisResultStorage, RedisTaskQueue

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


class TestRedisTaskQueue(TaskQueueSuite):
    @pytest.fixture
    def task_queue_factory(self, redis_url, prefix):
        return lambda: RedisTaskQueue(redis_url, prefix=prefix)

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
