"""The operator's reads and the retry: pages of tasks, queue statistics, a failed task run again.

Costs (one statement, one round trip each):

- ``list_page``: a top-N sort (memory O(limit)) of the tasks that match. A
  status filter reads only that status's tasks through the status index (the
  claim index for PENDING); without one it is a sequential scan of the tasks
  table (about 50 ms per page at 100,000 tasks). There is deliberately no index
  on ``created_at``: every claim and finish is a non-HOT update that would add
  an entry to it (+13 % WAL per task on enqueue and drain, measured).
- ``queue_stats``: one sequential scan of ``<schema>.tasks`` grouped by queue,
  status and minute of completion (O(tasks), at stats time only; nothing is
  counted on the enqueue/claim/finish path).
- ``retry``: one ``UPDATE`` by primary key; the ``tasks_requeued`` trigger
  NOTIFYs the queue on commit, as a release does, so idle workers wake.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg

from omniq.models import TaskStatus
from omniq.monitoring import RETRYABLE_STATUSES, THROUGHPUT_MINUTES, QueueStats, decode_cursor, stats_from_groups
from omniq_postgres.dependencies import WAITING_READY_AT
from omniq_postgres.records import strict_task_from_row
from omniq_postgres.sql import ACTIVE, TASK_COLUMNS, status_filter

if TYPE_CHECKING:
    from omniq.connection import Connection
    from omniq.models import Task
    from omniq.monitoring import TaskQuery
    from omniq_postgres.schema import Names

__all__ = ["TaskOperations"]

_RETRYABLE = "(" + ", ".join(sorted(f"'{status.value}'" for status in RETRYABLE_STATUSES)) + ")"
_COMPLETED = f"('{TaskStatus.SUCCEEDED.value}', '{TaskStatus.FAILED.value}')"
_STATUSES = tuple(status.value for status in TaskStatus)


class TaskOperations:
    """``list_page``, ``queue_stats`` and ``retry`` of a :class:`~omniq_postgres.task_queue.PostgresTaskQueue`.

    Args:
        names: the schema's names.
        connection: the task queue's pool connection.
    """

    def __init__(self, names: Names, connection: Connection[asyncpg.Pool]) -> None:
        tasks = names.tasks
        self._tasks = tasks
        self._connection = connection
        # A retried task is ready now and sorts as a fresh ready task; a unique key held by another
        # live task keeps this one finished (the partial unique index would refuse it anyway). One
        # cancelled while it waited for dependencies goes on waiting for those not ended yet
        # (omniq_postgres.dependencies); its own dependants were released when it ended.
        self._retry = f"""
            UPDATE {tasks} AS t
               SET status = 'pending', eta = NULL, paused = false, attempts = 0,
                   ready_at = CASE WHEN t.waiting > 0 THEN {WAITING_READY_AT} ELSE now() END,
                   error = NULL, started_at = NULL, finished_at = NULL, worker_id = NULL, has_dependants = NULL,
                   lease_token = NULL, lease_expires_at = NULL, held = NULL, rate_reserved = NULL, updated_at = now()
             WHERE t.id = $1 AND t.status IN {_RETRYABLE}
               AND (t.unique_key IS NULL OR NOT EXISTS (
                        SELECT 1 FROM {tasks} AS o
                         WHERE o.unique_key = t.unique_key AND o.status IN {ACTIVE} AND o.id <> t.id))
            RETURNING {TASK_COLUMNS}"""
        # Per queue, status and minute of completion (NULL: not completed in the window); the
        # oldest ready task's age comes from the pending group, without the tasks waiting for
        # dependencies (not ready). Minutes are whole UTC minutes.
        self._stats = f"""
            WITH c AS (SELECT now() AS now,
                              to_timestamp(floor(extract(epoch FROM now()) / 60) * 60)
                                  - ($1::int - 1) * interval '1 minute' AS start)
            SELECT t.queue, t.status, m.minute, count(*) AS n,
                   extract(epoch FROM c.now - min(coalesce(t.eta, t.created_at)) FILTER (
                       WHERE t.status = 'pending' AND NOT t.paused AND t.waiting = 0
                             AND coalesce(t.eta, t.created_at) <= c.now
                   ))::float8 AS age
              FROM {tasks} AS t CROSS JOIN c,
                   LATERAL (SELECT CASE WHEN t.status IN {_COMPLETED} AND t.finished_at >= c.start
                                             AND t.finished_at <= c.now
                                        THEN floor(extract(epoch FROM t.finished_at - c.start) / 60)::int
                                   END AS minute) AS m
             GROUP BY t.queue, t.status, m.minute, c.now"""

    def page_sql(self, query: TaskQuery) -> tuple[str, list[object]]:
        """The statement of :meth:`list_page` and its parameters."""
        clauses: list[str] = []
        args: list[object] = []

        def arg(value: object) -> str:
            args.append(value)
            return f"${len(args)}"

        if query.status is not None:
            clauses.append(status_filter([TaskStatus(query.status).value]))
        if query.queue is not None:
            number = arg(query.queue)
            clauses.append(f"hashtext(queue) = hashtext({number}) AND queue = {number}")  # the claim index's key
        if query.func is not None:
            clauses.append(f"func = {arg(query.func)}")
        if query.since is not None:
            clauses.append(f"created_at >= {arg(query.since)}")
        if query.until is not None:
            clauses.append(f"created_at < {arg(query.until)}")
        if query.after is not None:
            created_at, task_id = decode_cursor(query.after)
            at = arg(created_at)
            # (created_at, id) < the cursor's, written out so an index or a partition on created_at could bound it.
            clauses.append(f"created_at <= {at} AND (created_at < {at} OR id < {arg(task_id)})")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        limit = arg(max(int(query.limit), 0))
        return f"SELECT {TASK_COLUMNS} FROM {self._tasks}{where} ORDER BY created_at DESC, id DESC LIMIT {limit}", args

    async def list_page(self, query: TaskQuery) -> list[Task]:
        """A page of tasks, newest first, strictly after ``query.after`` (see :class:`~omniq.monitoring.TaskQuery`)."""
        sql, args = self.page_sql(query)
        pool = await self._connection.client()
        with self._connection.errors():
            rows = await pool.fetch(sql, *args)
        return [strict_task_from_row(row) for row in rows]

    async def queue_stats(self) -> list[QueueStats]:
        """Per queue: counts by status, the oldest ready task's age, completions per minute (one scan)."""
        pool = await self._connection.client()
        with self._connection.errors():
            rows = await pool.fetch(self._stats, THROUGHPUT_MINUTES)
        return stats_from_groups((row["queue"], row["status"], row["minute"], row["n"], row["age"]) for row in rows)

    async def retry(self, task_id: str) -> Task | None:
        """Make a FAILED, CANCELLED or EXPIRED task PENDING again with a fresh attempt budget, atomically."""
        pool = await self._connection.client()
        with self._connection.errors():
            try:
                row = await pool.fetchrow(self._retry, task_id)
            except asyncpg.UniqueViolationError:
                return None  # another task took the unique key between the check and the update
        return None if row is None else strict_task_from_row(row)
