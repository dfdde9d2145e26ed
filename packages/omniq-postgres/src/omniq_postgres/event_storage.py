"""PostgresEventStorage: an append-only events table, written in batches."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import anyio

from omniq.base import BaseEventStorage, Capability
from omniq.models import EventType, TaskEvent
from omniq_postgres.connection import normalize_url, pool_connection
from omniq_postgres.records import event_from_row
from omniq_postgres.schema import DEFAULT_SCHEMA, SEQ_BLOCK, Names
from omniq_postgres.sql import BatchColumns, uniform_mask

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Sequence
    from datetime import datetime

    import asyncpg


__all__ = ["PostgresEventStorage"]

logger = logging.getLogger("omniq.postgres")

_COLUMNS = "task_id, type, ts, queue, func, attempt, worker_id, message"
_APPEND_COLUMNS = (
    ("task_id", "text"),
    ("type", "text"),
    ("ts", "timestamptz"),
    ("queue", "text"),
    ("func", "text"),
    ("attempt", "int4"),
    ("worker_id", "text"),
    ("message", "text"),
)
#: seconds between opportunistic deletions of events older than ``ttl``.
_EXPIRE_EVERY = 60.0


def _render_append(events: str, v: dict[str, str], unnest: str | None, *, id_block: bool = True) -> str:
    values = ", ".join(v[name] for name, _ in _APPEND_COLUMNS)
    if not id_block:
        return f"INSERT INTO {events} ({_COLUMNS}) SELECT {values}{f' FROM {unnest} ORDER BY i.ord' if unnest else ''}"
    base = f"(SELECT nextval(pg_get_serial_sequence('{events}', 'id')) AS base) AS s"
    source = f"{base}, {unnest}" if unnest else base
    first = "s.base + i.ord - 1" if unnest else "s.base"
    return f"INSERT INTO {events} (id, {_COLUMNS}) OVERRIDING SYSTEM VALUE SELECT {first}, {values} FROM {source}"


class PostgresEventStorage(BaseEventStorage):
    """Task history in ``<schema>.events``.

    Args:
        url: ``postgresql://user:password@host:port/database``.
        schema: the PostgreSQL schema holding OmniQ's tables.
        ttl: seconds events are kept; older ones are deleted now and then
            while appending (None keeps them until :meth:`purge`).
        **pool_options: passed to :func:`asyncpg.create_pool`.
    """

    backend_name = "postgres"
    capabilities = frozenset({Capability.MULTI_PROCESS, Capability.MULTI_HOST, Capability.DURABLE})

    def __init__(
        self, url: str | None = None, *, schema: str = DEFAULT_SCHEMA, ttl: float | None = None, **pool_options: Any
    ) -> None:
        self.url = normalize_url(url)
        self.names = Names(schema)
        self.schema = schema
        self._connection = pool_connection(self.url, self.names, pool_options)
        self._ttl = ttl
        self._next_expiry = 0.0
        events = self.names.events
        # Columns that are the same on every event of a batch (type, time, queue, worker...) go in as
        # scalars. The id (the tie-breaker) follows batch order: one nextval per statement, rows
        # numbered inside the block the identity's increment leaves (as tasks.seq); past a block,
        # one nextval per row.
        self._append = BatchColumns(_APPEND_COLUMNS, lambda v, unnest: _render_append(events, v, unnest))
        self._append_large = BatchColumns(
            _APPEND_COLUMNS, lambda v, unnest: _render_append(events, v, unnest, id_block=False)
        )
        self._sql_expire = f"DELETE FROM {events} WHERE ts < now() - $1::float8 * interval '1 second'"
        self._events = events

    settings_options: ClassVar[Mapping[str, str]] = {"schema": "key_prefix", "ttl": "event_ttl"}

    def __repr__(self) -> str:
        return f"PostgresEventStorage(schema={self.schema!r})"

    async def connect(self) -> None:
        """Open the pool and migrate the schema (idempotent)."""
        await self._connection.connect()

    async def close(self) -> None:
        """Close the pool (idempotent)."""
        await self._connection.close()

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Insert a batch of events with one ``INSERT ... SELECT FROM unnest``."""
        if not events:
            return
        pool = await self._connection.client()
        with self._connection.errors():
            await pool.execute(*self._insert_statement(events))
            await self._expire_now_and_then(pool)

    async def append_once_decided(
        self, events: Sequence[TaskEvent], decision: asyncio.Future[bool], acquired: asyncio.Event
    ) -> bool:
        """Insert ``events`` in a transaction, commit it if ``decision`` comes out True; return whether it did.

        A bulk enqueue writes its events this way, beside the tasks' INSERT (see
        :meth:`PostgresTaskQueue.enqueue_recorded <omniq_postgres.task_queue.PostgresTaskQueue.enqueue_recorded>`).
        ``acquired`` is set once a connection is in hand (at once when the pool has an idle one).
        """
        pool = await self._connection.client()
        with self._connection.errors():
            async with pool.acquire() as conn:
                acquired.set()
                transaction = conn.transaction()
                await transaction.start()
                try:
                    await conn.execute(*self._insert_statement(events))
                    commit = await decision
                except BaseException:
                    await transaction.rollback()
                    raise
                if not commit:
                    await transaction.rollback()
                    return False
                await transaction.commit()
                await self._expire_now_and_then(conn)
        return True

    async def append_in(self, connection: Any, events: Sequence[TaskEvent]) -> None:
        """Insert ``events`` through a caller's connection to this database, in its open transaction."""
        if events:
            await connection.execute(*self._insert_statement(events))

    def _insert_statement(self, events: Sequence[TaskEvent]) -> list[Any]:
        """The INSERT of ``events`` and its parameters, for ``execute(*statement)``."""
        types = [e.type for e in events]
        columns: list[list[Any]] = [
            [e.task_id for e in events],
            types,
            [e.timestamp for e in events],
            [e.queue for e in events],
            [e.func for e in events],
            [e.attempt for e in events],
            [e.worker_id for e in events],
            [e.message for e in events],
        ]
        mask = uniform_mask(columns, vary_first=True)
        columns[1] = [EventType(t).value for t in (types if mask[1] else types[:1])]  # once when shared
        append = self._append_large if len(events) > SEQ_BLOCK else self._append
        sql, args = append.bind(columns, mask)
        return [sql, *args]

    async def _expire_now_and_then(self, executor: asyncpg.Pool | asyncpg.Connection) -> None:
        """Delete events older than ``ttl``, at most once per ``_EXPIRE_EVERY`` seconds."""
        if self._ttl is not None and anyio.current_time() >= self._next_expiry:
            self._next_expiry = anyio.current_time() + _EXPIRE_EVERY
            deleted = await executor.execute(self._sql_expire, float(self._ttl))
            logger.debug("expired old events: %s", deleted)

    async def query(
        self,
        *,
        task_id: str | None = None,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[TaskEvent]:
        """Events matching every filter (``since <= ts < until``), oldest first, ties in append order."""
        clauses: list[str] = []
        args: list[Any] = []
        if task_id is not None:
            args.append(task_id)
            clauses.append(f"task_id = ${len(args)}")
        if types is not None:
            args.append([t.value if isinstance(t, EventType) else str(t) for t in types])
            clauses.append(f"type = ANY(${len(args)}::text[])")
        if since is not None:
            args.append(since)
            clauses.append(f"ts >= ${len(args)}")
        if until is not None:
            args.append(until)
            clauses.append(f"ts < ${len(args)}")
        args.append(int(limit))
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {_COLUMNS} FROM {self._events}{where} ORDER BY ts, id LIMIT ${len(args)}"
        pool = await self._connection.client()
        with self._connection.errors():
            rows = await pool.fetch(sql, *args)
        return [event_from_row(row) for row in rows]

    async def purge(self, *, before: datetime | None = None) -> int:
        """Delete events older than ``before`` (all when None); return how many."""
        pool = await self._connection.client()
        with self._connection.errors():
            if before is None:
                status = await pool.execute(f"DELETE FROM {self._events}")
            else:
                status = await pool.execute(f"DELETE FROM {self._events} WHERE ts < $1", before)
        return int(status.split()[-1])
