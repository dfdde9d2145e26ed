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
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import anyio

from omniq.base import BaseResultStorage, Capability
from omniq.thread_clients import ThreadClients
from omniq_postgres.connection import Listener, close_single, normalize_url, open_single, pool_connection
from omniq_postgres.records import result_arrays, result_from_row
from omniq_postgres.schema import DEFAULT_SCHEMA, Names
from omniq_postgres.sql import RESULT_COLUMNS, upsert_results

if TYPE_CHECKING:
    from collections.abc import Sequence

    from omniq.models import TaskResult


__all__ = ["PostgresResultStorage"]

logger = logging.getLogger("omniq.postgres")

#: longest a waiter trusts NOTIFY alone before reading again (belt and braces).
_BACKSTOP = 10.0


class PostgresResultStorage(BaseResultStorage):
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
        {
            Capability.MULTI_PROCESS,
            Capability.MULTI_HOST,
            Capability.BLOCKING_WAIT,
            Capability.DURABLE,
            Capability.BLOCKING_READS,
        }
    )

    def __init__(
        self, url: str | None = None, *, schema: str = DEFAULT_SCHEMA, poll_interval: float = 1.0, **pool_options: Any
    ) -> None:
        self.url = normalize_url(url)
        self.names = Names(schema)
        self.schema = schema
        self._connection = pool_connection(self.url, self.names, pool_options)
        self._poll_interval = poll_interval
        self._waiters: dict[str, set[anyio.Event]] = {}
        self._listener = Listener(self.url, self.names.results_channel, self._notified, self._wake_all)
        columns = RESULT_COLUMNS
        self._sql_upsert = upsert_results(self.names.results)
        self._sql_get = f"""
            SELECT {columns} FROM {self.names.results}
             WHERE task_id = $1 AND (expires_at IS NULL OR expires_at > now())"""
        self._sql_get_many = f"""
            SELECT {columns} FROM {self.names.results}
             WHERE task_id = ANY($1::text[]) AND (expires_at IS NULL OR expires_at > now())"""
        self._sql_delete = f"DELETE FROM {self.names.results} WHERE task_id = $1 RETURNING 1"
        self._sql_purge_expired = f"DELETE FROM {self.names.results} WHERE expires_at <= now()"
        self._sql_purge_all = f"DELETE FROM {self.names.results}"
        # the sync API's reads: a connection per calling thread (replaced after 5 idle minutes)
        self._blocking = ThreadClients(partial(open_single, self.url, pool_options), close_single, max_idle=300.0)

    settings_options: ClassVar[Mapping[str, str]] = {"schema": "key_prefix"}

    def __repr__(self) -> str:
        return f"PostgresResultStorage(schema={self.schema!r})"

    async def connect(self) -> None:
        """Open the pool and migrate the schema (idempotent)."""
        await self._connection.connect()

    async def close(self) -> None:
        """Stop listening, wake waiters and close the pool (idempotent)."""
        await self._listener.close()
        self._wake_all()
        await self._blocking.aclose()
        await self._connection.close()

    # -- writes ------------------------------------------------------------------------------

    async def set(self, result: TaskResult) -> None:
        """Store or replace one result; committed results NOTIFY waiters."""
        await self.set_many([result])

    async def set_many(self, results: Sequence[TaskResult]) -> None:
        """Upsert a batch of results in one statement."""
        if not results:
            return
        pool = await self._connection.client()
        with self._connection.errors():
            await pool.execute(self._sql_upsert, *result_arrays(results))

    async def delete(self, task_id: str) -> bool:
        """Delete a result; True if there was one."""
        pool = await self._connection.client()
        with self._connection.errors():
            return await pool.fetchval(self._sql_delete, task_id) is not None

    async def purge(self, *, expired_only: bool = True) -> int:
        """Delete expired results (or all of them); return how many."""
        pool = await self._connection.client()
        with self._connection.errors():
            status = await pool.execute(self._sql_purge_expired if expired_only else self._sql_purge_all)
        return int(status.split()[-1])

    # -- reads -------------------------------------------------------------------------------

    async def get(self, task_id: str) -> TaskResult | None:
        """Return the unexpired result of ``task_id``, or None."""
        pool = await self._connection.client()
        with self._connection.errors():
            row = await pool.fetchrow(self._sql_get, task_id)
        return None if row is None else result_from_row(row)

    def get_blocking(self, task_id: str) -> TaskResult | None:
        """:meth:`get` in the calling thread: the same query, on that thread's own connection and loop."""
        self._connection.current  # noqa: B018 - connected in this process: the schema is migrated
        with self._connection.errors():
            row = self._blocking.run(lambda conn: conn.fetchrow(self._sql_get, task_id))
        return None if row is None else result_from_row(row)

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskResult | None]:
        """Return several unexpired results in one query, None for each missing."""
        if not task_ids:
            return []
        pool = await self._connection.client()
        with self._connection.errors():
            rows = await pool.fetch(self._sql_get_many, list(dict.fromkeys(task_ids)))
        found = {result.task_id: result for result in map(result_from_row, rows)}
        return [found.get(task_id) for task_id in task_ids]

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
