"""Redis-specific behaviour of the result and event storages."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest

from omniq.testing import make_event, make_result, now_ms
from omniq_redis import RedisEventStorage, RedisResultStorage, keys

pytestmark = [pytest.mark.servers, pytest.mark.anyio]


async def test_result_key_expires_on_the_server(results, raw, prefix):
    await results.set(make_result("soon", expires_at=now_ms(60)))
    ttl_ms = await raw.pttl(keys.result_key(prefix, "soon"))
    assert 55_000 < ttl_ms <= 60_000
    await results.set(make_result("forever"))
    assert await raw.pttl(keys.result_key(prefix, "forever")) == -1


async def test_waiters_on_many_results_each_wake_for_their_own(redis_url, prefix, results):
    woke: dict[str, str] = {}

    async def waiter(task_id: str) -> None:
        found = await results.wait(task_id, 10)
        woke[task_id] = found.task_id if found else "timeout"

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for index in range(5):
                group.start_soon(waiter, f"t{index}")
            await anyio.sleep(0.2)
            async with RedisResultStorage(redis_url, prefix=prefix) as writer:
                await writer.set_many([make_result(f"t{index}") for index in range(5)])
    assert woke == {f"t{index}": f"t{index}" for index in range(5)}


async def test_purge_counts_expired_results_the_server_already_dropped(results):
    await results.set_many([make_result("gone", expires_at=now_ms(-1)), make_result("kept", expires_at=now_ms(60))])
    assert await results.get("gone") is None
    assert await results.purge() == 1
    assert await results.purge() == 0
    assert await results.get("kept") is not None


async def test_events_out_of_time_order_are_all_found_by_since(redis_url, prefix):
    base = now_ms(-100)
    async with RedisEventStorage(redis_url, prefix=prefix) as events:
        await events.append([make_event("late", timestamp=base + timedelta(seconds=50))])
        await events.append([make_event("early", timestamp=base + timedelta(seconds=10))])
        found = await events.query(since=base + timedelta(seconds=5))
        assert [event.task_id for event in found] == ["early", "late"]
        assert [event.task_id for event in await events.query(since=base + timedelta(seconds=20))] == ["late"]
        # purge never deletes an event newer than `before`
        await events.purge(before=base + timedelta(seconds=30))
        assert "late" in [event.task_id for event in await events.query()]


async def test_event_stream_is_capped_and_trimmed_by_ttl(redis_url, prefix, raw):
    async with RedisEventStorage(redis_url, prefix=prefix, max_events=100, ttl=3600) as events:
        old = [make_event(f"old{index}", timestamp=now_ms(-7200)) for index in range(5)]
        await events.append(old)
        await events.append([make_event(f"new{index}") for index in range(1000)])
        length = await raw.xlen(keys.events_key(prefix))
        assert 100 <= length < 400, length  # MAXLEN ~ trims whole macro nodes
        assert not [event for event in await events.query(limit=10_000) if event.task_id.startswith("old")]
