"""The worker registry in Redis: every process and host sees the same live workers.

A hash ``{P}:workers`` (id -> msgpack :class:`~omniq.monitoring.WorkerInfo`)
and a zset ``{P}:workers:exp`` (id -> expiry, server clock µs); see
:mod:`omniq_redis.lua_workers`. Each call is one script: registering (or
refreshing, at every heartbeat) is an HSET and a ZADD; listing drops the
expired entries and returns the others (O(workers)).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec

from omniq.monitoring import WorkerInfo

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    Run = Callable[[str, Sequence[Any]], Awaitable[Any]]

__all__ = ["list_workers", "register_worker", "unregister_worker"]

logger = logging.getLogger("omniq.redis")

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(WorkerInfo)


async def register_worker(run: Run, prefix: str, worker: WorkerInfo, ttl: float) -> None:
    """Store or refresh ``worker``, to expire ``ttl`` seconds from now on the server's clock."""
    await run("register_worker", [prefix, worker.id, _encoder.encode(worker), max(int(ttl * 1_000_000), 1)])


async def unregister_worker(run: Run, prefix: str, worker_id: str) -> None:
    """Remove a worker (unknown ids are ignored)."""
    await run("unregister_worker", [prefix, worker_id])


async def list_workers(run: Run, prefix: str) -> list[WorkerInfo]:
    """The workers whose entry has not expired, oldest ``started_at`` first."""
    workers = []
    for blob in await run("list_workers", [prefix]):
        try:
            workers.append(_decoder.decode(blob))
        except msgspec.DecodeError as exc:  # noqa: PERF203 - one bad entry must not hide the others
            logger.error("left out a worker entry that cannot be read: %s", exc)
    return sorted(workers, key=lambda worker: worker.started_at)
