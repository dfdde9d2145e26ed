"""NatsEventStorage: a stream of events, one subject per task, ``max_age`` = event TTL.

``query(task_id=...)`` reads only that task's subject; time filters start
the read at ``since`` (minus a clock-skew margin: an event is stored after it
happened). Results are sorted by the events' own timestamps, ties in append
order, because batches from several writers arrive out of order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

import msgspec
from nats.js.api import StorageType, StreamConfig

from omniq.base import BaseEventStorage, Capability, map_exceptions, msgpack_decoder
from omniq.errors import BackendError
from omniq.models import TaskEvent
from omniq_nats import subjects as names
from omniq_nats._connection import (
    DEFAULT_URL,
    NATS_ERRORS,
    answered,
    api,
    ensure_stream,
    gather,
    mux,
    open_connection,
    scan,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from nats.aio.client import Client


__all__ = ["NatsEventStorage"]

logger = logging.getLogger("omniq.nats")

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

    def __init__(
        self, url: str | None = None, *, prefix: str = "omniq", ttl: float | None = None, **options: Any
    ) -> None:
        """Create an unconnected storage.

        Args:
            url: ``nats://[user:password@]host:port`` (default ``nats://127.0.0.1:4222``).
            prefix: prefix of the stream name and subjects.
            ttl: the stream's max_age in seconds (None: events stay until purged).
            **options: passed to :func:`nats.connect`.
        """
        self.url = url or DEFAULT_URL
        self.prefix = names.check_prefix(prefix)
        self.ttl = ttl
        self._options = options
        self._nc: Client | None = None

    settings_options: ClassVar[Mapping[str, str]] = {"prefix": "key_prefix", "ttl": "event_ttl"}

    @property
    def stream(self) -> str:
        """Name of the events stream."""
        return names.events_stream(self.prefix)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        with map_exceptions(NATS_ERRORS, url=self.url):
            yield

    async def connect(self) -> None:
        """Connect and create the stream (idempotent)."""
        if self._nc is not None:
            return
        nc = await open_connection(self.url, "omniq-event-storage", **self._options)
        config = StreamConfig(
            name=self.stream,
            subjects=[f"{self.prefix}.events.*"],
            max_age=self.ttl,
            storage=StorageType.FILE,
            num_replicas=1,
        )
        try:
            with self._errors():
                await ensure_stream(nc, config)
        except BaseException:
            await nc.close()
            raise
        self._nc = nc

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        nc, self._nc = self._nc, None
        if nc is not None:
            try:
                await nc.close()
            except Exception:
                logger.debug("error while closing the NATS connection", exc_info=True)

    async def _conn(self) -> Client:
        if self._nc is None:
            await self.connect()
        assert self._nc is not None
        return self._nc

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Publish a batch of events, pipelined, and wait for the stream to store them."""
        nc = await self._conn()
        requests = mux(nc)
        with self._errors():
            for start in range(0, len(events), _CHUNK):
                chunk = events[start : start + _CHUNK]
                answers = await requests.request_many(
                    [(names.event_subject(self.prefix, e.task_id), _encoder.encode(e), None) for e in chunk]
                )
                for reply in answers:
                    if b'"error"' in answered(reply).data:
                        raise BackendError(f"event rejected: {reply.data.decode(errors='replace')}")

    async def _read(self, task_id: str | None, since: datetime | None) -> list[tuple[int, TaskEvent]]:
        nc = await self._conn()
        subject = names.event_subject(self.prefix, task_id) if task_id else f"{self.prefix}.events.*"
        with self._errors():
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
        """Return events matching all filters, oldest first (ties in append order)."""
        wanted = None if types is None else {str(getattr(t, "value", t)) for t in types}
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
        nc = await self._conn()
        with self._errors():
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
