"""The worker registry: one row per live worker process in ``<schema>.workers``.

A worker registers (and refreshes, at every heartbeat) its
:class:`~omniq.monitoring.WorkerInfo` with an expiry of ``now() + ttl`` by the
database clock; readers see only rows not yet expired, so a killed worker
disappears once its TTL passes, and each registration deletes the rows that
expired (skipping any another registration is deleting), so they do not pile up.

Costs: ``register_worker`` is one statement (an upsert by primary key plus the
cleanup through ``workers_expires_idx``); ``unregister_worker`` one DELETE by
key; ``list_workers`` one SELECT of the live rows (the table holds one row per
worker process, so it is small).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import msgspec

from omniq.base import json_decoder
from omniq.errors import SerializationError
from omniq.monitoring import WorkerInfo

if TYPE_CHECKING:
    import asyncpg

    from omniq.connection import Connection
    from omniq_postgres.schema import Names

__all__ = ["WorkerRegistry"]

logger = logging.getLogger("omniq.postgres")

_encode = msgspec.json.Encoder().encode
_decode = json_decoder(WorkerInfo, "worker record")


class WorkerRegistry:
    """``register_worker``, ``unregister_worker`` and ``list_workers`` on one schema's ``workers`` table.

    Args:
        names: the schema's names.
        connection: the task queue's pool connection.
    """

    def __init__(self, names: Names, connection: Connection[asyncpg.Pool]) -> None:
        workers = names.workers
        self._connection = connection
        self._register = f"""
            WITH gone AS (DELETE FROM {workers}
                           WHERE id IN (SELECT id FROM {workers}
                                         WHERE expires_at <= now() AND id <> $1
                                           FOR UPDATE SKIP LOCKED))
            INSERT INTO {workers} (id, info, started_at, expires_at)
            VALUES ($1, $2::text::jsonb, $3, now() + $4::float8 * interval '1 second')
            ON CONFLICT (id) DO UPDATE
               SET info = EXCLUDED.info, started_at = EXCLUDED.started_at, expires_at = EXCLUDED.expires_at"""
        self._unregister = f"DELETE FROM {workers} WHERE id = $1"
        self._live = f"SELECT info::text FROM {workers} WHERE expires_at > now() ORDER BY started_at, id"

    async def register(self, worker: WorkerInfo, ttl: float) -> None:
        """Store or refresh ``worker`` until ``ttl`` seconds from now (database clock)."""
        pool = await self._connection.client()
        with self._connection.errors():
            await pool.execute(self._register, worker.id, _encode(worker).decode(), worker.started_at, float(ttl))

    async def unregister(self, worker_id: str) -> None:
        """Remove a worker; an unknown id is ignored."""
        pool = await self._connection.client()
        with self._connection.errors():
            await pool.execute(self._unregister, worker_id)

    async def live(self) -> list[WorkerInfo]:
        """The workers whose entry has not expired, oldest ``started_at`` first (an unreadable entry is skipped)."""
        pool = await self._connection.client()
        with self._connection.errors():
            rows = await pool.fetch(self._live)
        return [worker for row in rows if (worker := _readable(row[0])) is not None]


def _readable(text: str) -> WorkerInfo | None:
    """The worker of an entry, or None (logged) when it cannot be read: one bad entry hides no other worker."""
    try:
        return _decode(text)
    except SerializationError as exc:
        logger.warning("skipping a worker registry entry: %s", exc)
        return None
