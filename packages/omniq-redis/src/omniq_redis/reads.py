"""The task queue's plain reads, outside the scripts: one pipelined round trip each.

How long an idle worker may block (server clock, paused queues, READY sizes,
next delayed eta), and the newest ids and the sizes of a set of per-status zsets (list and
count). Each takes the pool (``RedisClient.redis``); the caller translates
errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence

    from omniq_redis.keys import QueueKeys

__all__ = ["block_time", "count_members", "newest_members"]


async def block_time(
    redis: Any, queues: Sequence[tuple[str, QueueKeys]], paused_key: str, timeout: float
) -> float | None:
    """How long to block on the queues' signal lists: None when work is ready (or no wait is due).

    A paused queue (a member of ``paused_key``) neither counts as ready nor bounds the wait
    by its next eta: its resume leaves a wake-up token instead.
    """
    async with redis.pipeline(transaction=False) as pipe:
        pipe.time()
        pipe.smembers(paused_key)
        for _, qk in queues:
            pipe.zcard(qk.ready)
            pipe.zrange(qk.delayed, 0, 0, withscores=True)
        replies = await pipe.execute()
    seconds, micros = replies[0]
    now_us = seconds * 1_000_000 + micros
    paused = {name.decode() for name in replies[1]}
    block = timeout
    for index, (queue, _) in enumerate(queues):
        if queue in paused:
            continue
        if replies[2 + 2 * index]:
            return None  # work is ready already (claimed by someone else meanwhile, or just arrived)
        earliest = replies[3 + 2 * index]
        if earliest:
            block = min(block, (earliest[0][1] - now_us) / 1_000_000)
    return None if block < 0.001 else block


async def newest_members(redis: Any, zsets: Sequence[str], limit: int, offset: int) -> list[str]:
    """The members with the highest scores across ``zsets`` (ties by member, descending), paged."""
    async with redis.pipeline(transaction=False) as pipe:
        for key in zsets:
            pipe.zrevrange(key, 0, offset + limit - 1, withscores=True)
        replies = await pipe.execute()
    entries = [(score, member) for reply in replies for member, score in reply]
    entries.sort(key=lambda entry: (entry[0], entry[1]), reverse=True)
    return [member.decode() for _, member in entries[offset : offset + limit]]


async def count_members(redis: Any, zsets: Sequence[str]) -> int:
    """The total size of ``zsets``."""
    async with redis.pipeline(transaction=False) as pipe:
        for key in zsets:
            pipe.zcard(key)
        return sum(await pipe.execute())
