"""NatsEventStorage: a stream of events, one subject per task, ``max_age`` = event TTL.

``query(task_id=...)`` reads only that task's subject; time filters start
the read at ``since`` (minus a clock-skew margin: an event is stored after it
happened) and keep the half-open range ``since <= at < until``. Results are
sorted by the events' own timestamps, ties in append order, because batches
from several writers arrive out of order.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec

from omniq.base import BaseEventStorage, Capability, msgpack_decoder
from omniq.constants import DEFAULT_PREFIX
from omniq.errors import BackendError
from omniq.models import TaskEvent
from omniq_nats import subjects as names
from omniq_nats.connection import events_connection, normalize_url
from omniq_nats.jetstream import answered, api, gather, mux, scan

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


__all__ = ["NatsEventStorage"]

_CHUNK = 500  # publishes in flight per pipelined batch
_SKEW = timedelta(minutes=5)  # how far a writer's clock may lead the server's
_encoder = msgspec.msgpack.Encoder()
_decode = msgpack_decoder(TaskEvent, "event")


class NatsEventStorage(BaseEventStorage):
    """Event storage on a JetStream stream."""

    backend_name: ClassVar[str] = "nats"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {Capability.MULTI_PROCESS, Capability.MULTI_HOST, Capability.DURABLE}
    )
    settings_options: ClassVar[Mapping[str, str]] = {"prefix": "key_prefix", "ttl": "event_ttl"}

    def __init__(
        self, url: str | None = None, *, prefix: str = DEFAULT_PREFIX, ttl: float | None = None, **options: Any
    ) -> None:
        """Create an unconnected storage.

        Args:
            url: ``nats://[user:password@]host:port`` (default ``nats://127.0.0.1:4222``).
            prefix: prefix of the stream name and subjects.
            ttl: the stream's max_age in seconds (None: events stay until purged).
            **options: passed to :func:`nats.connect`.
        """
        self.url = normalize_url(url)
        self.prefix = names.check_prefix(prefix)
        self.ttl = ttl
        self._connection = events_connection(self.url, self.prefix, ttl, options)

    @property
    def stream(self) -> str:
        """Name of the events stream."""
        return names.events_stream(self.prefix)

    async def connect(self) -> None:
        """Connect and create the stream (idempotent)."""
        await self._connection.connect()

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        await self._connection.close()

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Publish a batch of events, pipelined, and wait for the stream to store them."""
        nc = await self._connection.client()
        requests = mux(nc)
        with self._connection.errors():
            for start in range(0, len(events), _CHUNK):
                chunk = events[start : start + _CHUNK]
                answers = await requests.request_many(
                    [(names.event_subject(self.prefix, e.task_id), _encoder.encode(e), None) for e in chunk]
                )
                for reply in answers:
                    if b'"error"' in answered(reply).data:
                        raise BackendError(f"event rejected: {reply.data.decode(errors='replace')}")

    async def _read(self, task_id: str | None, since: datetime | None) -> list[tuple[int, TaskEvent]]:
        nc = await self._connection.client()
        subject = names.event_subject(self.prefix, task_id) if task_id else f"{self.prefix}.events.*"
        with self._connection.errors():
            msgs = await scan(nc, self.stream, subject, start=None if since is None else since - _SKEW)
        return [(msg.metadata.sequence.stream, _decode(msg.data)) for msg in msgs]

    async def query(
        self,
        *,
        task_id: str | None = None,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[TaskEvent]:
        """Return events matching all filters (``since <= timestamp < until``), oldest first (ties in append order)."""
        wanted = None if types is None else frozenset(types)  # strings: the core normalises them
        events = [
            event
            for _, event in await self._read(task_id, since)
            if (wanted is None or event.type.value in wanted)
            and (since is None or event.timestamp >= since)
            and (until is None or event.timestamp < until)
        ]
        events.sort(key=lambda e: e.timestamp)  # stable: ties stay in append order
        return events[:limit]

    async def purge(self, *, before: datetime | None = None) -> int:
        """Delete events older than ``before`` (all when None); return how many."""
        nc = await self._connection.client()
        with self._connection.errors():
            if before is None:
                answer = await api(nc, f"STREAM.PURGE.{self.stream}", {})
                return int(answer.get("purged", 0))
            doomed = [seq for seq, event in await self._read(None, None) if event.timestamp < before]
            for start in range(0, len(doomed), _CHUNK):
                await gather(
                    api(nc, f"STREAM.MSG.DELETE.{self.stream}", {"seq": seq, "no_erase": True})
                    for seq in doomed[start : start + _CHUNK]
                )
        return len(doomed)
