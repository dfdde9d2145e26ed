"""The operations on Redis beyond the conformance suite: how the scripts find, count and expire things."""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest
import redis.asyncio as aioredis

from omniq.models import Outcome, OutcomeKind, TaskStatus
from omniq.monitoring import TaskQuery, page_cursor
from omniq.testing import make_task, now_ms
from omniq.testing.task_queue.workers import make_worker
from omniq_redis import RedisTaskQueue, keys

pytestmark = [pytest.mark.servers, pytest.mark.anyio]


async def ids_of(queue: RedisTaskQueue, **filters: object) -> list[str]:
    return [task.id for task in await queue.list_page(TaskQuery(**filters))]  # type: ignore[arg-type]


async def test_func_filter_reads_the_envelope_field_not_lookalikes(queue: RedisTaskQueue) -> None:
    """The name must be the whole func field: not a prefix of it, nor the same bytes in the payload or id."""
    wanted = [make_task("mod.f"), make_task("mod.f", id="x" * 5), make_task("mod.f", id="y" * 300)]
    lookalikes = [
        make_task("mod.fx"),
        make_task("mod.other", payload=b"\x01\xa4func\xa5mod.f"),
        make_task("mod.other", id="mod.f"),
        make_task("m\u00f6d.f"),
    ]
    await queue.enqueue_many(wanted + lookalikes)
    assert sorted(await ids_of(queue, func="mod.f", limit=50)) == sorted(task.id for task in wanted)
    assert await ids_of(queue, func="m\u00f6d.f") == [lookalikes[3].id]
    assert await ids_of(queue, func="nothing") == []


async def test_func_filter_finds_a_rare_name_behind_many_others(queue: RedisTaskQueue) -> None:
    base = now_ms(-100)
    rare = make_task("mod.rare", created_at=base)
    await queue.enqueue_many([rare, *(make_task(created_at=base + timedelta(seconds=1)) for _ in range(450))])
    assert await ids_of(queue, func="mod.rare", limit=1) == [rare.id]


async def test_ties_sort_in_byte_order_as_redis_does(queue: RedisTaskQueue) -> None:
    """Equal created_at: ids descending by bytes (lowercase after uppercase), whatever the server's locale."""
    moment = now_ms(-10)
    names = ["a" * 32, "B" * 32, "b" * 32, "A" * 32, "0" * 32]
    await queue.enqueue_many([make_task(id=name, created_at=moment) for name in names])
    expected = sorted(names, reverse=True)
    assert await ids_of(queue) == expected
    cursor = page_cursor(moment, expected[1])
    assert await ids_of(queue, after=cursor) == expected[2:]


async def test_oldest_ready_age_looks_past_priorities(queue: RedisTaskQueue) -> None:
    """READY sorts by priority first: the oldest ready task may sit behind younger ones of higher priority."""
    await queue.enqueue_many(
        [
            make_task(priority=9, created_at=now_ms(-10)),
            make_task(priority=5, created_at=now_ms(-20)),
            make_task(priority=0, created_at=now_ms(-300)),
            make_task(priority=-3, created_at=now_ms(-30)),
        ]
    )
    (stats,) = await queue.queue_stats()
    assert stats.oldest_ready_age is not None and 299 <= stats.oldest_ready_age < 360


async def test_completions_are_counted_per_minute_with_an_expiry(
    queue: RedisTaskQueue, raw: aioredis.Redis, prefix: str
) -> None:
    """One counter per queue and minute, kept by finish and by recover (a task out of attempts fails)."""
    await queue.enqueue_many([make_task(queue="q") for _ in range(3)])
    claimed = await queue.claim_ready(["q"], 2, lease=60, worker_id="w")
    outcomes = [Outcome(task_id=t.id, lease_token=t.lease_token or "", kind=OutcomeKind.SUCCEEDED) for t in claimed]
    assert await queue.finish(outcomes) == [True, True]
    await queue.claim_ready(["q"], 1, lease=0.05, worker_id="w")
    with anyio.fail_after(10):
        while not await queue.recover():
            await anyio.sleep(0.05)
    counters = [key async for key in raw.scan_iter(match=f"{{{prefix}:q}}:{keys.DONE}:*")]
    assert counters, "no completion counter"
    assert sum(int(value or 0) for value in await raw.mget(counters)) == 3
    for key in counters:
        assert 0 < await raw.ttl(key) <= keys.DONE_TTL
    (stats,) = await queue.queue_stats()
    assert sum(stats.completed_per_minute) == 3
    assert stats.counts[TaskStatus.FAILED.value] == 1


async def test_expired_workers_are_cleaned_from_the_engine(
    queue: RedisTaskQueue, raw: aioredis.Redis, prefix: str
) -> None:
    await queue.register_worker(make_worker(id="short"), 0.05)
    await queue.register_worker(make_worker(id="long"), 60)
    await anyio.sleep(0.1)
    assert [w.id for w in await queue.list_workers()] == ["long"]
    assert await raw.hkeys(keys.global_key(prefix, keys.WORKERS)) == [b"long"]
    assert await raw.zrange(keys.global_key(prefix, keys.WORKER_EXPIRY), 0, -1) == [b"long"]
    await queue.unregister_worker("long")
    assert await queue.list_workers() == []
    assert not await raw.exists(keys.global_key(prefix, keys.WORKERS))
