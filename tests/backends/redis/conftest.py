"""Fixtures for the Redis-specific tests: a unique key prefix per test, deleted afterwards."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
import redis.asyncio as aioredis

from omniq_redis import RedisResultStorage, RedisTaskQueue

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    name = f"omniq-test-{uuid.uuid4().hex[:12]}"
    yield name
    client = aioredis.Redis.from_url(redis_url)
    try:
        doomed = [key async for key in client.scan_iter(match=f"*{name}*", count=1000)]
        if doomed:
            await client.unlink(*doomed)
    finally:
        await client.aclose()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client to look at (or tamper with) what the backend stored."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def queue(redis_url: str, prefix: str) -> AsyncIterator[RedisTaskQueue]:
    async with RedisTaskQueue(redis_url, prefix=prefix) as task_queue:
        yield task_queue


@pytest.fixture
async def results(redis_url: str, prefix: str) -> AsyncIterator[RedisResultStorage]:
    async with RedisResultStorage(redis_url, prefix=prefix) as storage:
        yield storage
