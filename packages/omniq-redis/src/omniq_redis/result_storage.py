"""RedisResultStorage: one key per result, expiring with it, and pub/sub wake-ups.

A result is ``SET P:r:<id> <msgpack> PXAT <expires_at>``, indexed in the
``P:results`` zset (by expiry) so purge needs no SCAN, and announced on the
channel ``P:rn:<id>``. :meth:`wait` subscribes *before* it reads the key,
so a result stored between the two is never missed. The fused path
(``RedisTaskQueue.finish(results=...)``) writes exactly the same three
things inside the finish script.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from omniq.base import BaseResultStorage, Capability
from omniq.constants import DEFAULT_PREFIX
from omniq.errors import redact_url
from omniq.models import TaskResult, decode_result, encode_result, utcnow
from omniq_redis import keys
from omniq_redis._codec import to_ms
from omniq_redis.connection import check_url, redis_connection

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime


__all__ = ["RedisResultStorage"]

#: seconds between re-reads of the key while waiting (guards against a message lost on reconnect).
_RECHECK = 5.0
#: results deleted per purge round trip.
_PURGE_CHUNK = 1000


class RedisResultStorage(BaseResultStorage):
    """Result storage on Redis.

    Args:
        url: ``redis://`` or ``rediss://`` URL; default ``redis://127.0.0.1:6379/0``.
        prefix: prefix of every key (``Settings.key_prefix``).
        **options: passed to ``redis.asyncio.Redis.from_url``.
    """

    backend_name = "redis"
    capabilities = frozenset(
        {
            Capability.MULTI_PROCESS,
            Capability.MULTI_HOST,
            Capability.BLOCKING_WAIT,
            Capability.DURABLE,
            Capability.BLOCKING_READS,
        }
    )

    def __init__(self, url: str | None = None, *, prefix: str = DEFAULT_PREFIX, **options: Any) -> None:
        self.url = check_url(url)
        self.prefix = keys.validate_prefix(prefix)
        self._connection = redis_connection(self.url, options, scripts=False)
        self._index = keys.result_index_key(self.prefix)

    settings_options: ClassVar[Mapping[str, str]] = {"prefix": "key_prefix"}

    def __repr__(self) -> str:
        return f"RedisResultStorage(url={redact_url(self.url)!r}, prefix={self.prefix!r})"

    async def connect(self) -> None:
        """Open the connection pool."""
        await self._connection.connect()

    async def close(self) -> None:
        """Close the connection pool (idempotent)."""
        await self._connection.close()

    async def _redis(self) -> Any:
        """The connected pool (see :attr:`RedisClient.redis`), opened on first use."""
        return (await self._connection.client()).redis

    async def set(self, result: TaskResult) -> None:
        """Store a result and wake its waiters."""
        await self.set_many([result])

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Store results in one pipelined round trip."""
        if not results:
            return
        redis = await self._redis()
        with self._connection.errors():
            async with redis.pipeline(transaction=False) as pipe:
                for result in results:
                    key = keys.result_key(self.prefix, result.task_id)
                    if result.expires_at is None:
                        pipe.set(key, encode_result(result))
                        pipe.zadd(self._index, {result.task_id: math.inf})
                    else:
                        expires_ms = to_ms(result.expires_at)
                        pipe.set(key, encode_result(result), pxat=max(expires_ms, 1))
                        pipe.zadd(self._index, {result.task_id: expires_ms})
                    pipe.publish(keys.result_channel(self.prefix, result.task_id), b"1")
                await pipe.execute()

    async def get(self, task_id: str) -> TaskResult | None:
        """Return the result, or None (never stored, deleted or expired)."""
        redis = await self._redis()
        with self._connection.errors():
            data = await redis.get(keys.result_key(self.prefix, task_id))
        return _live(data)

    def get_blocking(self, task_id: str) -> TaskResult | None:
        """:meth:`get` in the calling thread, over the blocking transport."""
        with self._connection.errors():
            (data,) = self._connection.current.blocking.call([("GET", keys.result_key(self.prefix, task_id))])
            if isinstance(data, Exception):
                raise data
        return _live(data)

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskResult | None]:
        """Return several results with MGETs of 1,000 keys, None for each missing or expired."""
        if not task_ids:
            return []
        redis = await self._redis()
        datas: list[bytes | None] = []
        with self._connection.errors():
            for start in range(0, len(task_ids), 1000):
                chunk = task_ids[start : start + 1000]
                datas.extend(await redis.mget([keys.result_key(self.prefix, task_id) for task_id in chunk]))
        now = utcnow()
        return [_live(data, now) for data in datas]

    async def wait(self, task_id: str, timeout: float | None) -> TaskResult | None:
        """Wait for a result on its pub/sub channel (subscribe first, then read)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        redis = await self._redis()
        with self._connection.errors():
            pubsub = redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.result_channel(self.prefix, task_id))
                while True:
                    result = await self.get(task_id)
                    if result is not None:
                        return result
                    remaining = _RECHECK if deadline is None else min(_RECHECK, deadline - time.monotonic())
                    if remaining <= 0:
                        return None
                    # Any message on this channel means "read again"; so does a quiet recheck period.
                    await pubsub.get_message(timeout=remaining)
            finally:
                await pubsub.aclose()

    async def delete(self, task_id: str) -> bool:
        """Delete a result; True if there was one."""
        redis = await self._redis()
        with self._connection.errors():
            async with redis.pipeline(transaction=False) as pipe:
                pipe.delete(keys.result_key(self.prefix, task_id))
                pipe.zrem(self._index, task_id)
                deleted, _ = await pipe.execute()
        return bool(deleted)

    async def purge(self, *, expired_only: bool = True) -> int:
        """Delete expired results (or all of them); return how many."""
        redis = await self._redis()
        max_score: float | str = time.time() * 1000 if expired_only else "+inf"
        removed = 0
        with self._connection.errors():
            while True:
                ids = await redis.zrangebyscore(self._index, "-inf", max_score, start=0, num=_PURGE_CHUNK)
                if not ids:
                    return removed
                async with redis.pipeline(transaction=False) as pipe:
                    pipe.unlink(*(keys.result_key(self.prefix, task_id.decode()) for task_id in ids))
                    pipe.zrem(self._index, *ids)
                    _, count = await pipe.execute()
                removed += count


def _live(data: bytes | None, now: datetime | None = None) -> TaskResult | None:
    """The result stored as ``data``, unless there is none or it expired (by ``now``, default the clock's)."""
    if data is None:
        return None
    result = decode_result(data)
    if result.expires_at is not None and result.expires_at <= (now or utcnow()):
        return None  # PXAT has millisecond precision; do not show a result in its last millisecond
    return result
