"""PostgresResultStorage: a results table, woken by NOTIFY on the results channel.

``wait`` registers its waiter, makes sure the listener connection is
LISTENing, and only then reads the table, so a result committed at any
moment is either seen by the read or announced by a NOTIFY that arrives
after the LISTEN. A reconnect of the listener wakes every waiter to read
again (NOTIFYs sent while nobody listened are lost).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import msgspec

from omniq.base import BaseResultStorage, Capability, from_row, json_decoder, map_exceptions
from omniq.models import TaskError, TaskResult, TaskStatus
from omniq_postgres._connection import ERRORS, Listener, PoolOwner
from omniq_postgres.schema import DEFAULT_SCHEMA

if TYPE_CHECKING:
    from collections.abc import Sequence

    import asyncpg


__all__ = ["PostgresResultStorage"]

logger = logging.getLogger("omniq.postgres")

RESULT_COLUMNS = "task_id, status, payload, error, attempts, func, queue, started_at, finished_at, expires_at"

_decode_error = json_decoder(TaskError, "task error")
_json_encoder = msgspec.json.Encoder()
#: longest a waiter trusts NOTIFY alone before reading again (belt and braces).
_BACKSTOP = 10.0


def encode_error(error: TaskError | None) -> str | None:
    """A TaskError as JSON text for a ``jsonb`` column."""
    return None if error is None else _json_encoder.encode(error).decode()


def decode_error(text: str | None) -> TaskError | None:
    """The inverse of :func:`encode_error` (SerializationError when the column is corrupted)."""
    return None if text is None else _decode_error(text)


def result_arrays(results: Sequence[TaskResult]) -> list[list[Any]]:
    """Column arrays (``RESULT_COLUMNS`` order) for an ``unnest`` upsert."""
    return [
        [r.task_id for r in results],
        [r.status.value for r in results],
        [r.payload for r in results],
        [encode_error(r.error) for r in results],
        [r.attempts for r in results],
        [r.func for r in results],
        [r.queue for r in results],
        [r.started_at for r in results],
        [r.finished_at for r in results],
        [r.expires_at for r in results],
    ]


def _from_row(row: asyncpg.Record) -> TaskResult:
    return from_row(_build_result, row, "result")


def _build_result(row: asyncpg.Record) -> TaskResult:
    return TaskResult(
        task_id=row["task_id"],
        status=TaskStatus(row["status"]),
        payload=row["payload"],
        error=decode_error(row["error"]),
        attempts=row["attempts"],
        func=row["func"],
        queue=row["queue"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        expires_at=row["expires_at"],
    )


class PostgresResultStorage(PoolOwner, BaseResultStorage):
    """Results in ``<schema>.results``; ``wait`` blocks on LISTEN/NOTIFY.

    Args:
        url: ``postgresql://user:password@host:port/database`` (default
            ``postgresql://127.0.0.1:5432/postgres``).
        schema: the PostgreSQL schema holding OmniQ's tables.
        poll_interval: seconds between reads while NOTIFY is unavailable.
        **pool_options: passed to :func:`asyncpg.create_pool` (``min_size``, ``max_size``...).
    """

    backend_name = "postgres"
    capabilities = frozenset(
        {Capability.MULTI_PROCESS, Capability.MULTI_HOST, Capability.BLOCKING_WAIT, Capability.DURABLE}
    )

    def __init__(
        self, url: str | None = None, *, schema: str = DEFAULT_SCHEMA, poll_interval: float = 1.0, **pool_options: Any
    ) -> None:
        self._init_pool_owner(url, schema, pool_options)
        self._poll_interval = poll_interval
        self._waiters: dict[str, set[anyio.Event]] = {}
        self._listener = Listener(self.url, self.names.results_channel, self._notified, self._wake_all)
        columns = RESULT_COLUMNS
        self._sql_upsert = f"""
            INSERT INTO {self.names.results} ({columns})
            SELECT r.task_id, r.status, r.payload, r.error::jsonb, r.attempts, r.func, r.queue,
                   r.started_at, r.finished_at, r.expires_at
              FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::int4[], $6::text[], $7::text[],
                          $8::timestamptz[], $9::timestamptz[], $10::timestamptz[])
                   AS r({columns})
            ON CONFLICT (task_id) DO UPDATE
               SET status = EXCLUDED.status, payload = EXCLUDED.payload, error = EXCLUDED.error,
                   attempts = EXCLUDED.attempts, func = EXCLUDED.func, queue = EXCLUDED.queue,
                   started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at,
                   expires_at = EXCLUDED.expires_at"""
        self._sql_get = f"""
            SELECT {columns} FROM {self.names.results}
             WHERE task_id = $1 AND (expires_at IS NULL OR expires_at > now())"""
        self._sql_delete = f"DELETE FROM {self.names.results} WHERE task_id = $1 RETURNING 1"
        self._sql_purge_expired = f"DELETE FROM {self.names.results} WHERE expires_at <= now()"
        self._sql_purge_all = f"DELETE FROM {self.names.results}"

    settings_options: ClassVar[Mapping[str, str]] = {"schema": "key_prefix"}

    def __repr__(self) -> str:
        return f"PostgresResultStorage(schema={self.schema!r})"

    async def close(self) -> None:
        """Stop listening, wake waiters and close the pool (idempotent)."""
        await self._listener.close()
        self._wake_all()
        await self._close_pool()

    # -- writes ------------------------------------------------------------------------------

    async def set(self, result: TaskResult) -> None:
        """Store or replace one result; committed results NOTIFY waiters."""
        await self.set_many([result])

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Upsert a batch of results in one statement."""
        if not results:
            return
        pool = await self._get_pool()
        with map_exceptions(ERRORS, url=self.url):
            await pool.execute(self._sql_upsert, *result_arrays(results))

    async def delete(self, task_id: str) -> bool:
        """Delete a result; True if there was one."""
        pool = await self._get_pool()
        with map_exceptions(ERRORS, url=self.url):
            return await pool.fetchval(self._sql_delete, task_id) is not None

    async def purge(self, *, expired_only: bool = True) -> int:
        """Delete expired results (or all of them); return how many."""
        pool = await self._get_pool()
        with map_exceptions(ERRORS, url=self.url):
            status = await pool.execute(self._sql_purge_expired if expired_only else self._sql_purge_all)
        return int(status.split()[-1])

    # -- reads -------------------------------------------------------------------------------

    async def get(self, task_id: str) -> TaskResult | None:
        """Return the unexpired result of ``task_id``, or None."""
        pool = await self._get_pool()
        with map_exceptions(ERRORS, url=self.url):
            row = await pool.fetchrow(self._sql_get, task_id)
        return None if row is None else _from_row(row)

    async def wait(self, task_id: str, timeout: float | None) -> TaskResult | None:
        """Wait for the result of ``task_id``; None after ``timeout`` seconds (None = forever)."""
        deadline = math.inf if timeout is None else anyio.current_time() + max(timeout, 0.0)
        event = anyio.Event()
        waiters = self._waiters.setdefault(task_id, set())
        waiters.add(event)
        try:
            while True:
                # LISTEN before reading: a result committed after the read is then announced.
                listening = await self._listener.ensure()
                result = await self.get(task_id)
                if result is not None:
                    return result
                remaining = deadline - anyio.current_time()
                if remaining <= 0:
                    return None
                step = min(remaining, _BACKSTOP if listening else self._poll_interval)
                with anyio.move_on_after(step):
                    await event.wait()
                if event.is_set():
                    waiters.discard(event)
                    event = anyio.Event()
                    waiters.add(event)
        finally:
            waiters.discard(event)
            if not waiters and self._waiters.get(task_id) is waiters:
                del self._waiters[task_id]

    # -- listener callbacks ------------------------------------------------------------------

    def _notified(self, task_id: str) -> None:
        for event in self._waiters.get(task_id, ()):
            event.set()

    def _wake_all(self) -> None:
        for waiters in self._waiters.values():
            for event in waiters:
                event.set()
