"""The worker registry: one KV record per live worker in ``<prefix>_workers``.

A worker's record is its :class:`~omniq.monitoring.WorkerInfo` and the TTL
it registered with. nats-server before 2.11 has no per-message TTL, so the
expiry is judged at read time on the engine's clock: the record's own
JetStream time stamp (set by the server when the heartbeat wrote it) plus
its TTL, against the engine time (:class:`~omniq_nats.clock.EngineClock`).
A reader that finds an expired record purges it, only up to that revision,
so a heartbeat that refreshed it meanwhile stays.

Costs: ``register`` is one KV write, ``unregister`` one stream purge,
``list`` one scan of the (small) bucket plus a purge per expired record;
the bucket is created on the connection's first registry call, so the task
queue's connect and its hot path do not pay for it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import msgspec

from omniq.base import msgpack_decoder
from omniq.errors import SerializationError
from omniq.monitoring import WorkerInfo
from omniq_nats import subjects as names
from omniq_nats.jetstream import api, gather
from omniq_nats.kv import Bucket, ensure_kv

if TYPE_CHECKING:
    from omniq_nats.connection import QueueClient

__all__ = ["Registration", "list_workers", "register_worker", "unregister_worker"]


class Registration(msgspec.Struct, array_like=True):
    """One workers-bucket value: the worker and the seconds its record lives after it was written."""

    worker: WorkerInfo
    ttl: float


_encoder = msgspec.msgpack.Encoder()
_decode = msgpack_decoder(Registration, "worker record")


async def _bucket(client: QueueClient) -> Bucket:
    """The workers bucket, created on first use per connection."""
    if client.workers is None:
        client.workers = await ensure_kv(client.nc, names.workers_bucket(client.prefix))
    return client.workers


async def register_worker(client: QueueClient, worker: WorkerInfo, ttl: float) -> None:
    """Store or refresh ``worker``'s record (one unconditional KV write)."""
    bucket = await _bucket(client)
    await bucket.put(names.token(worker.id), _encoder.encode(Registration(worker, ttl)))


async def unregister_worker(client: QueueClient, worker_id: str) -> None:
    """Remove ``worker_id``'s record, leaving no tombstone (unknown ids are ignored)."""
    bucket = await _bucket(client)
    await bucket.remove(names.token(worker_id))


async def list_workers(client: QueueClient) -> list[WorkerInfo]:
    """The live workers, oldest ``started_at`` first; expired (or unreadable) records are purged."""
    bucket = await _bucket(client)
    entries = await bucket.entries()
    now = await client.clock.now()
    live: list[WorkerInfo] = []
    dead: list[tuple[str, int]] = []
    for key, entry in entries:
        try:
            registration = _decode(entry.value)
        except SerializationError:
            dead.append((key, entry.revision))
            continue
        if entry.time is not None and entry.time + timedelta(seconds=registration.ttl) <= now:
            dead.append((key, entry.revision))
        else:
            live.append(registration.worker)
    # purge each dead record only up to its revision: a refresh written since then stays.
    await gather(
        api(bucket.nc, f"STREAM.PURGE.{bucket.stream}", {"filter": bucket.subject(key), "seq": revision + 1})
        for key, revision in dead
    )
    live.sort(key=lambda worker: worker.started_at)
    return live
