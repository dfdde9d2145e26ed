"""SQLiteResultStorage: results in the same file as the queue by default.

When it shares the file with :class:`~omniq_sqlite.task_queue.SQLiteTaskQueue`,
the queue writes results inside its finish transaction (the fused fast path)
and :meth:`SQLiteResultStorage.set` is only used for results written outside
a finish. Waiters are woken by in-process events and by ``r-*`` datagram
hints from other processes, with a slow poll as the safety net.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import anyio

from omniq.base import BaseResultStorage, Capability
from omniq.models import TaskResult, decode_result, encode_result
from omniq_sqlite import schema
from omniq_sqlite._wake import RESULTS
from omniq_sqlite.connection import SETTINGS_OPTIONS, sqlite_connection
from omniq_sqlite.records import to_ts

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["SQLiteResultStorage"]


def _set_job(conn: Any, rows: list[tuple[Any, ...]]) -> None:
    conn.executemany(schema.UPSERT_RESULT, rows)


def _get_job(conn: Any, task_id: str) -> bytes | None:
    row = conn.execute(schema.SELECT_RESULT, (task_id,)).fetchone()
    if row is None or (row[1] is not None and row[1] <= time.time()):
        return None
    return row[0]  # type: ignore[no-any-return]


def _get_many_job(conn: Any, task_ids: Sequence[str]) -> dict[str, bytes]:
    now = time.time()
    found: dict[str, bytes] = {}
    for start in range(0, len(task_ids), _IN_CHUNK):
        chunk = task_ids[start : start + _IN_CHUNK]
        sql = schema.SELECT_RESULTS_IN.format(marks=",".join("?" * len(chunk)))
        found.update(
            (task_id, data)
            for task_id, data, expires_at in conn.execute(sql, chunk)
            if expires_at is None or expires_at > now
        )
    return found


#: ids per ``IN (...)`` (SQLite allows 32,766 variables since 3.32; fewer keep each statement small).
_IN_CHUNK = 500


def _rowcount_job(conn: Any, sql: str, params: Sequence[Any]) -> int:
    return conn.execute(sql, params).rowcount  # type: ignore[no-any-return]


def _row(result: TaskResult) -> tuple[Any, ...]:
    return (result.task_id, encode_result(result), to_ts(result.expires_at))


class SQLiteResultStorage(BaseResultStorage):
    """Task results in one SQLite file, with TTL (``expires_at``) and cross-process wake-ups."""

    capabilities = frozenset(
        {
            Capability.MULTI_PROCESS,
            Capability.BLOCKING_WAIT,
            Capability.FUSED_RESULTS,
            Capability.DURABLE,
            Capability.BLOCKING_READS,
        }
    )

    backend_name = "sqlite"
    settings_options = SETTINGS_OPTIONS

    def __init__(self, url: str | os.PathLike[str] | None = None, **options: Any) -> None:
        """Build unconnected; ``options`` (``wait_poll`` among them): see :class:`omniq_sqlite.connection.Options`."""
        self.options, self._connection = sqlite_connection(url, **options)
        self.path, self.url = self.options.path, self.options.url

    def __repr__(self) -> str:
        return f"SQLiteResultStorage({self.url!r})"

    async def connect(self) -> None:
        """Join the queue's database on the file (or open it, when the results live in a file of their own)."""
        await self._connection.connect()

    async def close(self) -> None:
        """Leave the database (the last component of the process on the file closes it)."""
        await self._connection.close()

    async def set(self, result: TaskResult) -> None:
        """Store (or replace) one result and wake its waiters."""
        await self.set_many([result])

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Store several results in one transaction."""
        if not results:
            return
        db = await self._connection.client()
        await db.write(_set_job, [_row(result) for result in results])
        db.notify(RESULTS, [result.task_id for result in results])

    async def get(self, task_id: str) -> TaskResult | None:
        """Return the result, or None when there is none or it expired."""
        db = await self._connection.client()
        data = await db.read(_get_job, task_id)
        return decode_result(data) if data is not None else None

    def get_blocking(self, task_id: str) -> TaskResult | None:
        """:meth:`get` in the calling thread: the same select, under the connection's lock."""
        data = self._connection.current.read_blocking(_get_job, task_id)
        return decode_result(data) if data is not None else None

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskResult | None]:
        """Return several results in one read (``IN`` lists of 500 ids), None for each missing or expired."""
        if not task_ids:
            return []
        db = await self._connection.client()
        found = await db.read(_get_many_job, list(dict.fromkeys(task_ids)))
        decoded = {task_id: decode_result(data) for task_id, data in found.items()}
        return [decoded.get(task_id) for task_id in task_ids]

    async def wait(self, task_id: str, timeout: float | None) -> TaskResult | None:
        """Wait for the result: woken by hints, re-checking at least every ``wait_poll`` seconds."""
        db = await self._connection.client()
        waiter = db.hub.add_waiter(RESULTS, task_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                waiter.reset()  # armed before the check, so a result stored after it wakes us
                result = await self.get(task_id)
                if result is not None:
                    return result
                delay = self.options.wait_poll
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                    delay = min(delay, remaining)
                with anyio.move_on_after(delay):
                    await waiter.event.wait()
        finally:
            db.hub.remove_waiter(RESULTS, waiter)

    async def delete(self, task_id: str) -> bool:
        """Delete a result; True if there was one."""
        db = await self._connection.client()
        return bool(await db.write(_rowcount_job, schema.DELETE_RESULT, (task_id,)))

    async def purge(self, *, expired_only: bool = True) -> int:
        """Delete expired results (or all of them)."""
        db = await self._connection.client()
        if expired_only:
            return int(await db.write(_rowcount_job, schema.PURGE_RESULTS_EXPIRED, (time.time(),)))
        return int(await db.write(_rowcount_job, schema.PURGE_RESULTS_ALL, ()))
