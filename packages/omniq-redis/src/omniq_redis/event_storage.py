"""RedisEventStorage: a capped stream per prefix.

``append`` is one script call per batch: ``XADD P:events <ms>-* d
<msgpack>`` per event, where ``<ms>`` is the event's own timestamp when that
keeps ids increasing (else the server picks, which is never earlier than
the event), then ``XTRIM MAXLEN ~ N`` caps the stream and ``XTRIM MINID ~``
drops what is older than the event TTL. Since an entry id is never earlier
than its event's timestamp, ``query(since=...)`` starts its XRANGE at ``since`` and
``purge(before=...)`` is ``XTRIM MINID before`` (it never deletes an event
newer than ``before``). Other filters are applied while reading.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from omniq.base import BaseEventStorage, Capability, msgpack_decoder
from omniq.constants import DEFAULT_PREFIX
from omniq.errors import redact_url
from omniq.models import TaskEvent
from omniq_redis import keys
from omniq_redis._codec import to_us
from omniq_redis.connection import check_url, redis_connection

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime


__all__ = ["RedisEventStorage"]

#: default cap on the stream length (approximate, trimmed with MAXLEN ~).
DEFAULT_MAX_EVENTS = 100_000
#: entries read per XRANGE page while querying.
_PAGE = 1000
#: events per append script call.
_APPEND_CHUNK = 1000

_encoder = msgspec.msgpack.Encoder()
_decode = msgpack_decoder(TaskEvent, "event")


class RedisEventStorage(BaseEventStorage):
    """Event storage on a Redis stream.

    Args:
        url: ``redis://`` or ``rediss://`` URL; default ``redis://127.0.0.1:6379/0``.
        prefix: prefix of every key (``Settings.key_prefix``).
        max_events: approximate cap on the number of stored events.
        ttl: seconds events are kept (``Settings.event_ttl``); None keeps them until capped or purged.
        **options: passed to ``redis.asyncio.Redis.from_url``.
    """

    backend_name = "redis"
    capabilities = frozenset({Capability.MULTI_PROCESS, Capability.MULTI_HOST, Capability.DURABLE})

    def __init__(
        self,
        url: str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        max_events: int = DEFAULT_MAX_EVENTS,
        ttl: float | None = None,
        **options: Any,
    ) -> None:
        self.url = check_url(url)
        self.prefix = keys.validate_prefix(prefix)
        self.max_events = max_events
        self.ttl = ttl
        self._connection = redis_connection(self.url, options)
        self._key = keys.events_key(self.prefix)

    settings_options: ClassVar[Mapping[str, str]] = {"prefix": "key_prefix", "ttl": "event_ttl"}

    def __repr__(self) -> str:
        return f"RedisEventStorage(url={redact_url(self.url)!r}, prefix={self.prefix!r})"

    async def connect(self) -> None:
        """Open the connection pool and load the append script."""
        await self._connection.connect()

    async def close(self) -> None:
        """Close the connection pool (idempotent)."""
        await self._connection.close()

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Append a batch of events in one script call (per 1,000 events)."""
        if not events:
            return
        min_id = "" if self.ttl is None else str(int((time.time() - self.ttl) * 1000))
        for start in range(0, len(events), _APPEND_CHUNK):
            args: list[Any] = [self.prefix, self.max_events, min_id]
            for event in events[start : start + _APPEND_CHUNK]:
                args.extend((max(to_us(event.timestamp) // 1000, 1), _encoder.encode(event)))
            client = await self._connection.client()
            with self._connection.errors():
                await client.run("append_events", args, [self._key])

    async def query(
        self,
        *,
        task_id: str | None = None,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[TaskEvent]:
        """Return matching events (``since <= timestamp < until``), oldest first (ties in append order)."""
        if limit <= 0:
            return []
        wanted = None if types is None else {getattr(kind, "value", kind) for kind in types}
        start = "-" if since is None else str(max(to_us(since) // 1000, 0))
        matches: list[TaskEvent] = []
        redis = (await self._connection.client()).redis
        with self._connection.errors():
            while True:
                page = await redis.xrange(self._key, min=start, max="+", count=_PAGE)
                for _, fields in page:
                    event = _decode(fields[b"d"])
                    if task_id is not None and event.task_id != task_id:
                        continue
                    if wanted is not None and event.type.value not in wanted:
                        continue
                    if (since is not None and event.timestamp < since) or (
                        until is not None and event.timestamp >= until
                    ):
                        continue  # half-open: since <= timestamp < until
                    matches.append(event)
                if len(page) < _PAGE:
                    break
                start = "(" + page[-1][0].decode()
        matches.sort(key=lambda event: event.timestamp)  # stable: ties keep stream (append) order
        return matches[:limit]

    async def purge(self, *, before: datetime | None = None) -> int:
        """Delete events older than ``before`` (all when None); return how many."""
        redis = (await self._connection.client()).redis
        with self._connection.errors():
            if before is None:
                async with redis.pipeline(transaction=True) as pipe:
                    pipe.xlen(self._key)
                    pipe.delete(self._key)
                    count, _ = await pipe.execute()
                return int(count)
            return int(await redis.xtrim(self._key, minid=str(to_us(before) // 1000), approximate=False))
