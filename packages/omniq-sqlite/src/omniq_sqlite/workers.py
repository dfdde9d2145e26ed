"""The worker registry: one row per live worker process in ``omniq_workers``.

A worker registers (and refreshes, at every heartbeat) its
:class:`~omniq.monitoring.WorkerInfo`, msgpack-encoded, with an expiry of
``now + ttl`` by the host clock (SQLite's engine clock, shared by every process
on the file); readers see only rows not yet expired, so a killed worker
disappears once its TTL passes, and each registration deletes the rows that
expired, so they do not pile up.

Costs: ``register_worker`` is one group-committed write (a DELETE through
``omniq_workers_expires`` plus an upsert by primary key); ``unregister_worker``
one DELETE by key; ``list_workers`` one SELECT of the live rows (one row per
worker process: a small table).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from omniq.base import msgpack_decoder
from omniq.monitoring import WorkerInfo
from omniq_sqlite.records import encoder
from omniq_sqlite.schema import WORKERS

if TYPE_CHECKING:
    import sqlite3

    from omniq.connection import Connection
    from omniq_sqlite.database import Database

__all__ = ["WorkerRegistry"]

_decode = msgpack_decoder(WorkerInfo, "worker record")

_CLEAN = f"DELETE FROM {WORKERS} WHERE expires_at <= ? AND id <> ?"
_UPSERT = f"INSERT OR REPLACE INTO {WORKERS} (id, info, started_at, expires_at) VALUES (?, ?, ?, ?)"
_DELETE = f"DELETE FROM {WORKERS} WHERE id = ?"
_LIVE = f"SELECT info FROM {WORKERS} WHERE expires_at > ? ORDER BY started_at, id"


def _register_job(conn: sqlite3.Connection, worker_id: str, info: bytes, started_at: float, ttl: float) -> None:
    now = time.time()
    conn.execute(_CLEAN, (now, worker_id))
    conn.execute(_UPSERT, (worker_id, info, started_at, now + ttl))


def _unregister_job(conn: sqlite3.Connection, worker_id: str) -> None:
    conn.execute(_DELETE, (worker_id,))


def _live_job(conn: sqlite3.Connection) -> list[Any]:
    return conn.execute(_LIVE, (time.time(),)).fetchall()


class WorkerRegistry:
    """``register_worker``, ``unregister_worker`` and ``list_workers`` on the file's ``omniq_workers`` table.

    Args:
        connection: the task queue's database connection.
    """

    def __init__(self, connection: Connection[Database]) -> None:
        self._connection = connection

    async def register(self, worker: WorkerInfo, ttl: float) -> None:
        """Store or refresh ``worker`` until ``ttl`` seconds from now (host clock)."""
        db = await self._connection.client()
        info = encoder.encode(worker)
        await db.write(_register_job, worker.id, info, worker.started_at.timestamp(), float(ttl))

    async def unregister(self, worker_id: str) -> None:
        """Remove a worker; an unknown id is ignored."""
        db = await self._connection.client()
        await db.write(_unregister_job, worker_id)

    async def live(self) -> list[WorkerInfo]:
        """The workers whose entry has not expired, oldest ``started_at`` first."""
        db = await self._connection.client()
        rows = await db.read(_live_job)
        return [_decode(row[0]) for row in rows]
