"""NatsResultStorage: a KV bucket of results, waits woken by the key's own subject.

Every KV put is also a plain NATS message on ``$KV.<bucket>.<key>``, so a
waiter subscribes to that one subject (the cheapest possible KV watch: no
consumer is created), then reads the key once to catch a result written
before it subscribed.

Expiry: the bucket's ``max_age`` is the result TTL (``Settings.result_ttl``);
a result whose own ``expires_at`` passed is invisible and removed by ``purge``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, ClassVar

import anyio

from omniq.base import BaseResultStorage, Capability
from omniq.constants import DEFAULT_PREFIX
from omniq.models import TaskResult, decode_result, encode_result, utcnow
from omniq.thread_clients import ThreadClients
from omniq_nats import subjects as names
from omniq_nats.connection import close_results, normalize_url, open_results, results_connection
from omniq_nats.jetstream import gather

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from omniq_nats.kv import Entry


__all__ = ["NatsResultStorage"]

_CHUNK = 500  # writes in flight per pipelined batch


def _stored(entry: Entry | None) -> TaskResult | None:
    """The live result a read of its key found."""
    return None if entry is None or entry.deleted else _live(decode_result(entry.value))


def _live(result: TaskResult | None) -> TaskResult | None:
    if result is None or (result.expires_at is not None and result.expires_at <= utcnow()):
        return None
    return result


class NatsResultStorage(BaseResultStorage):
    """Result storage in a JetStream KV bucket."""

    backend_name: ClassVar[str] = "nats"
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {
            Capability.MULTI_PROCESS,
            Capability.MULTI_HOST,
            Capability.BLOCKING_WAIT,
            Capability.DURABLE,
            Capability.BLOCKING_READS,
        }
    )
    settings_options: ClassVar[Mapping[str, str]] = {"prefix": "key_prefix", "ttl": "result_ttl"}

    def __init__(
        self, url: str | None = None, *, prefix: str = DEFAULT_PREFIX, ttl: float | None = None, **options: Any
    ) -> None:
        """Create an unconnected storage.

        Args:
            url: ``nats://[user:password@]host:port`` (default ``nats://127.0.0.1:4222``).
            prefix: prefix of the bucket name.
            ttl: the bucket's max_age in seconds (None: results stay until purged).
            **options: passed to :func:`nats.connect`.
        """
        self.url = normalize_url(url)
        self.prefix = names.check_prefix(prefix)
        self.ttl = ttl
        self._connection = results_connection(self.url, self.prefix, ttl, options)
        # the sync API's reads: a client per calling thread, replaced after a minute unused (see the task queue's)
        self._blocking = ThreadClients(
            functools.partial(open_results, self.url, self.prefix, ttl, options), close_results, max_idle=60.0
        )

    async def connect(self) -> None:
        """Connect and create the bucket (idempotent)."""
        await self._connection.connect()

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        await self._blocking.aclose()
        await self._connection.close()

    async def set(self, result: TaskResult) -> None:
        """Store (or replace) one result."""
        await self.set_many([result])

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Store several results, pipelined."""
        bucket = await self._connection.client()
        with self._connection.errors():
            for start in range(0, len(results), _CHUNK):
                chunk = results[start : start + _CHUNK]
                await bucket.put_many([(names.token(r.task_id), encode_result(r)) for r in chunk])

    async def get(self, task_id: str) -> TaskResult | None:
        """Return the result, or None (also when it expired)."""
        bucket = await self._connection.client()
        with self._connection.errors():
            entry = await bucket.get(names.token(task_id))
        return _stored(entry)

    def get_blocking(self, task_id: str) -> TaskResult | None:
        """:meth:`get` in the calling thread: the same direct get, on that thread's own client and loop."""
        self._connection.current  # noqa: B018 - connected in this process: the bucket exists
        with self._connection.errors():
            entry = self._blocking.run(lambda bucket: bucket.get(names.token(task_id)))
        return _stored(entry)

    async def wait(self, task_id: str, timeout: float | None) -> TaskResult | None:
        """Wait for the result on its key's subject; None after ``timeout`` s."""
        bucket = await self._connection.client()
        nc = bucket.nc
        with self._connection.errors():
            sub = await nc.subscribe(bucket.subject(names.token(task_id)))
            try:
                await nc.flush()  # subscribed before we look, so no write falls in between
                result = await self.get(task_id)
                if result is not None:
                    return result
                with anyio.move_on_after(timeout if timeout is not None else float("inf")):
                    while True:
                        msg = await sub.next_msg(timeout=None)
                        if msg.headers and msg.headers.get(names.KV_OPERATION):
                            continue  # a delete marker
                        result = _live(decode_result(msg.data))
                        if result is not None:
                            return result
                return None
            finally:
                await sub.unsubscribe()

    async def delete(self, task_id: str) -> bool:
        """Delete a result (no tombstone is left); True if there was one."""
        bucket = await self._connection.client()
        with self._connection.errors():
            return await bucket.remove(names.token(task_id)) > 0

    async def purge(self, *, expired_only: bool = True) -> int:
        """Delete expired results (or all); return how many."""
        bucket = await self._connection.client()
        with self._connection.errors():
            entries = await bucket.entries()
            if not expired_only:
                await bucket.clear()
                return len(entries)
            now = utcnow()
            doomed = [
                key for key, entry in entries if (r := decode_result(entry.value)).expires_at and r.expires_at <= now
            ]
            removed = await gather(bucket.remove(key) for key in doomed)
        return sum(1 for n in removed if n)
