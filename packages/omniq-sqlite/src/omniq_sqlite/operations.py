"""The operator's reads and the retry: pages of tasks, queue statistics, a failed task run again.

Costs (one hop to the database's thread, one statement each):

- ``list_page``: a backward walk of ``omniq_tasks_created`` (``created_at, id``)
  from the keyset cursor (a row-value bound the index seeks to), the filters
  checked on the way, stopping after ``limit`` matches: O(page) when the
  filters match most tasks, at worst a walk over the older tasks that do not
  match (a rare status or name behind a large history).
- ``queue_stats``: one scan of ``omniq_tasks`` grouped by queue, status and
  minute of completion, at stats time only (O(tasks)); nothing is counted on
  the enqueue, claim or finish path.
- ``retry``: one ``UPDATE ... RETURNING`` by id under ``BEGIN IMMEDIATE`` (a
  group-committed write), refused while another live task holds the unique
  key; waiting workers are woken as after an enqueue.

Times are the host clock (SQLite's engine clock), epoch seconds.
"""

from __future__ import annotations

import math
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from omniq.models import TaskStatus
from omniq.monitoring import RETRYABLE_STATUSES, THROUGHPUT_MINUTES, QueueStats, decode_cursor, stats_from_groups
from omniq_sqlite import schema
from omniq_sqlite._wake import WORK
from omniq_sqlite.jobs import fetch_job
from omniq_sqlite.records import row_to_task

if TYPE_CHECKING:
    from omniq.connection import Connection
    from omniq.models import Task
    from omniq.monitoring import TaskQuery
    from omniq_sqlite.database import Database

__all__ = ["TaskOperations", "page_sql"]

_RETRYABLE = "(" + ", ".join(sorted(f"'{status.value}'" for status in RETRYABLE_STATUSES)) + ")"
_COMPLETED = f"('{TaskStatus.SUCCEEDED.value}', '{TaskStatus.FAILED.value}')"
_STATUSES = tuple(status.value for status in TaskStatus)

#: a retried task is ready now (ready_at = now: it sorts as a fresh ready task); a unique key held by
#: another live task keeps it finished (the partial unique index would refuse it anyway).
_RETRY = (
    f"UPDATE {schema.TASKS} AS t SET status = 'pending', eta = NULL, ready_at = ?, paused = 0, attempts = 0, "
    "error = NULL, started_at = NULL, finished_at = NULL, worker_id = NULL, lease_token = NULL, "
    "lease_expires_at = NULL, updated_at = ? "
    f"WHERE t.id = ? AND t.status IN {_RETRYABLE} AND (t.unique_key IS NULL OR NOT EXISTS ("
    f"SELECT 1 FROM {schema.TASKS} AS o WHERE o.unique_key = t.unique_key "
    "AND o.status IN ('pending', 'running') AND o.id <> t.id)) "
    f"RETURNING {schema.TASK_COLUMNS}"
)

#: per queue, status and minute of completion (NULL: not completed in the window), with the oldest
#: ready task's time among the pending group. Parameters: now, start, now, start, now.
_STATS = (
    "SELECT queue, status, CASE WHEN status IN " + _COMPLETED + " AND finished_at >= ? AND finished_at <= ? "
    "THEN CAST((finished_at - ?) / 60 AS INTEGER) END AS minute, count(*), "
    "min(CASE WHEN status = 'pending' AND paused = 0 AND waiting = 0 AND coalesce(eta, created_at) <= ? "
    "THEN coalesce(eta, created_at) END) "
    f"FROM {schema.TASKS} GROUP BY queue, status, minute"
)


def page_sql(query: TaskQuery) -> tuple[str, list[Any]]:
    """The statement of :meth:`TaskOperations.list_page` and its parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    if query.status is not None:
        clauses.append("status = ?")
        params.append(TaskStatus(query.status).value)
    if query.queue is not None:
        clauses.append("queue = ?")
        params.append(query.queue)
    if query.func is not None:
        clauses.append("func = ?")
        params.append(query.func)
    if query.since is not None:
        clauses.append("created_at >= ?")
        params.append(query.since.timestamp())
    if query.until is not None:
        clauses.append("created_at < ?")
        params.append(query.until.timestamp())
    if query.after is not None:
        created_at, task_id = decode_cursor(query.after)
        clauses.append("(created_at, id) < (?, ?)")  # a row value: the index seeks to it
        params += [created_at.timestamp(), task_id]
    where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    params.append(max(int(query.limit), 0))
    sql = (
        f"SELECT {schema.TASK_COLUMNS} FROM {schema.TASKS} INDEXED BY {schema.IDX_TASKS_CREATED}{where} "
        "ORDER BY created_at DESC, id DESC LIMIT ?"
    )
    return sql, params


def _stats_job(conn: sqlite3.Connection) -> tuple[float, float, list[Any]]:
    now = time.time()
    start = math.floor(now / 60) * 60 - (THROUGHPUT_MINUTES - 1) * 60
    return now, start, conn.execute(_STATS, (start, now, start, now)).fetchall()


def _retry_job(conn: sqlite3.Connection, task_id: str) -> Any:
    now = time.time()
    try:
        return conn.execute(_RETRY, (now, now, task_id)).fetchone()
    except sqlite3.IntegrityError:  # the unique index refused it: another live task holds the key
        return None


class TaskOperations:
    """``list_page``, ``queue_stats`` and ``retry`` of a :class:`~omniq_sqlite.task_queue.SQLiteTaskQueue`.

    Args:
        connection: the task queue's database connection.
    """

    def __init__(self, connection: Connection[Database]) -> None:
        self._connection = connection

    async def list_page(self, query: TaskQuery) -> list[Task]:
        """A page of tasks, newest first, strictly after ``query.after`` (see :class:`~omniq.monitoring.TaskQuery`)."""
        sql, params = page_sql(query)
        db = await self._connection.client()
        rows = await db.read(fetch_job, sql, params)
        return [row_to_task(row) for row in rows]

    async def queue_stats(self) -> list[QueueStats]:
        """Per queue: counts by status, the oldest ready task's age, completions per minute (one scan)."""
        db = await self._connection.client()
        now, _, rows = await db.read(_stats_job)
        return stats_from_groups(
            (queue, status, minute, count, None if ready_since is None else now - ready_since)
            for queue, status, minute, count, ready_since in rows
        )

    async def retry(self, task_id: str) -> Task | None:
        """Make a FAILED, CANCELLED or EXPIRED task PENDING again with a fresh attempt budget, atomically."""
        db = await self._connection.client()
        row = await db.write(_retry_job, task_id)
        if row is None:
            return None
        db.notify(WORK)
        return row_to_task(row)
