"""SQLiteEventStorage: the task history, appended in batches with ``executemany``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from omniq.base import BaseEventStorage, Capability
from omniq.models import EventType, TaskEvent
from omniq_sqlite import schema
from omniq_sqlite.connection import SETTINGS_OPTIONS, sqlite_connection
from omniq_sqlite.records import from_ts

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

__all__ = ["SQLiteEventStorage", "event_rows"]

_TYPES = {event_type.value: event_type for event_type in EventType}


def event_rows(events: Sequence[TaskEvent]) -> list[tuple[Any, ...]]:
    """The parameters of ``schema.INSERT_EVENT`` for each event."""
    return [
        (
            event.task_id,
            EventType(event.type).value,
            event.timestamp.timestamp(),
            event.queue,
            event.func,
            event.attempt,
            event.worker_id,
            event.message,
        )
        for event in events
    ]


def _append_job(conn: Any, rows: list[tuple[Any, ...]]) -> None:
    conn.executemany(schema.INSERT_EVENT, rows)


def _fetch_job(conn: Any, sql: str, params: Sequence[Any]) -> list[Any]:
    return conn.execute(sql, params).fetchall()  # type: ignore[no-any-return]


def _rowcount_job(conn: Any, sql: str, params: Sequence[Any]) -> int:
    return conn.execute(sql, params).rowcount  # type: ignore[no-any-return]


def _to_event(row: Sequence[Any]) -> TaskEvent:
    return TaskEvent(
        task_id=row[0],
        type=_TYPES[row[1]],
        timestamp=from_ts(row[2]),  # type: ignore[arg-type]
        queue=row[3],
        func=row[4],
        attempt=row[5],
        worker_id=row[6],
        message=row[7],
    )


class SQLiteEventStorage(BaseEventStorage):
    """Task events in one SQLite file; purge(before=...) implements the event TTL."""

    capabilities = frozenset({Capability.MULTI_PROCESS, Capability.DURABLE})

    backend_name = "sqlite"
    settings_options = SETTINGS_OPTIONS

    def __init__(self, url: str | os.PathLike[str] | None = None, **options: Any) -> None:
        """Build unconnected; ``options``: see :class:`omniq_sqlite.connection.Options`."""
        self.options, self._connection = sqlite_connection(url, **options)
        self.path, self.url = self.options.path, self.options.url

    def __repr__(self) -> str:
        return f"SQLiteEventStorage({self.url!r})"

    async def connect(self) -> None:
        """Join the database on the file that the queue opened, or open it."""
        await self._connection.connect()

    async def close(self) -> None:
        """Leave the database; the process's last user of the file closes it."""
        await self._connection.close()

    async def append(self, events: Sequence[TaskEvent]) -> None:
        """Store a batch of events in one transaction."""
        if not events:
            return
        db = await self._connection.client()
        await db.write(_append_job, event_rows(events))

    async def query(
        self,
        *,
        task_id: str | None = None,
        types: Sequence[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 1000,
    ) -> list[TaskEvent]:
        """Return matching events (``since <= timestamp < until``), oldest first, ties in append order."""
        clauses: list[str] = []
        params: list[Any] = []
        if task_id is not None:
            clauses.append("task_id = ?")
            params.append(task_id)
        if types is not None:
            if not types:
                return []
            clauses.append(f"type IN {schema.placeholders(len(types))}")
            params.extend(EventType(t).value for t in types)
        if since is not None:
            clauses.append("timestamp >= ?")
            params.append(since.timestamp())
        if until is not None:
            clauses.append("timestamp < ?")  # half-open: since <= at < until
            params.append(until.timestamp())
        where = " WHERE " + " AND ".join(clauses) if clauses else ""
        sql = f"SELECT {schema.EVENT_COLUMNS} FROM {schema.EVENTS}{where} ORDER BY timestamp, seq LIMIT ?"
        db = await self._connection.client()
        rows = await db.read(_fetch_job, sql, [*params, limit])
        return [_to_event(row) for row in rows]

    async def purge(self, *, before: datetime | None = None) -> int:
        """Delete events older than ``before`` (all when None)."""
        db = await self._connection.client()
        if before is None:
            return int(await db.write(_rowcount_job, f"DELETE FROM {schema.EVENTS}", ()))
        return int(
            await db.write(_rowcount_job, f"DELETE FROM {schema.EVENTS} WHERE timestamp < ?", (before.timestamp(),))
        )
