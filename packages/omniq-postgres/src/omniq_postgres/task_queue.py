"""PostgresTaskQueue: SKIP LOCKED batch claims, token-checked batch finishes, NOTIFY wake-ups.

Round trips: ``enqueue_many`` is one ``INSERT ... SELECT FROM unnest``
(:mod:`omniq_postgres.enqueue`; ``enqueue_recorded`` runs the events' INSERT
of a bulk enqueue at the same time, on a second connection, and commits it
after the tasks'); ``claim_ready`` is one ``UPDATE ... WHERE id IN (SELECT ...
FOR UPDATE SKIP LOCKED)``; ``extend`` and ``finish`` are one ``UPDATE ... FROM
unnest`` each, and a fused ``finish`` upserts the results in the same
statement (:mod:`omniq_postgres.sql`). All times come from the database clock
(``now()``). Flow control and queue pause: :mod:`omniq_postgres.flow`.
Dependencies (a dependant waits, not claimable, until its last dependency
ends): :mod:`omniq_postgres.dependencies`.

Wake-ups: ``<schema>.tasks`` gets a NOTIFY with the queue name when a task
becomes claimable: from the enqueue statement itself (delivered on commit,
also of a caller's transaction), from a row trigger for retry, release,
recover and resume, and from the step that ends a dependant's last
dependency. Rows inserted by other SQL wake no one; workers find them
at their next poll. A dedicated listener connection turns that into
in-process events (:class:`~omniq_postgres.connection.QueueWakeups`). NOTIFY
is a hint: ``wait_for_work`` still returns after its timeout, and every
reconnect of the listener wakes all waiters once.
"""

from __future__ import annotations

import builtins
import logging
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from omniq.base import BaseEventStorage, BaseResultStorage, BaseTaskQueue, Capability, lease_expired_error
from omniq.models import Outcome, Task, TaskEvent, TaskStatus
from omniq.thread_clients import ThreadClients
from omniq_postgres.connection import (
    QueueWakeups,
    close_single,
    dsn_identity,
    normalize_url,
    open_single,
    pool_connection,
)
from omniq_postgres.enqueue import TaskInserts
from omniq_postgres.event_storage import PostgresEventStorage
from omniq_postgres.finishing import Finishes, claimed_tasks
from omniq_postgres.flow import QueuePauses
from omniq_postgres.fused_events import enqueue_beside
from omniq_postgres.held import HeldConnection
from omniq_postgres.operations import TaskOperations
from omniq_postgres.records import encode_error, leased_task_from_row, strict_task_from_row
from omniq_postgres.result_storage import PostgresResultStorage
from omniq_postgres.schema import DEFAULT_SCHEMA, Names
from omniq_postgres.sql import TASK_COLUMNS, TaskSQL
from omniq_postgres.workers import WorkerRegistry

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from omniq.monitoring import QueueStats, TaskQuery, WorkerInfo


__all__ = ["PostgresTaskQueue"]

logger = logging.getLogger("omniq.postgres")

_RECOVER_BATCH = 1000


class PostgresTaskQueue(BaseTaskQueue):
    """Tasks in ``<schema>.tasks``, claimed with ``FOR UPDATE SKIP LOCKED``.

    Args:
        url: ``postgresql://user:password@host:port/database`` (default
            ``postgresql://127.0.0.1:5432/postgres``).
        schema: the PostgreSQL schema holding OmniQ's tables (created and
            migrated on connect).
        poll_interval: longest sleep of ``wait_for_work`` while LISTEN is unavailable.
        **pool_options: passed to :func:`asyncpg.create_pool` (``min_size``, ``max_size``...).
    """

    backend_name = "postgres"
    capabilities = frozenset(
        {
            Capability.MULTI_PROCESS,
            Capability.MULTI_HOST,
            Capability.BLOCKING_WAIT,
            Capability.FUSED_RESULTS,
            Capability.FUSED_EVENTS,
            Capability.DURABLE,
            Capability.FORK_SAFE,
            Capability.WORKER_REGISTRY,
            Capability.FLOW_CONTROL,
            Capability.QUEUE_PAUSE,
            Capability.TRANSACTIONAL_ENQUEUE,
            Capability.BLOCKING_READS,
            Capability.DEPENDENCIES,
            Capability.BLOCKING_ENQUEUE,
        }
    )

    def __init__(
        self, url: str | None = None, *, schema: str = DEFAULT_SCHEMA, poll_interval: float = 1.0, **pool_options: Any
    ) -> None:
        self.url = normalize_url(url)
        self.names = Names(schema)
        self.schema = schema
        self._connection = pool_connection(self.url, self.names, pool_options)
        self._sql = TaskSQL(self.names)
        self._inserts = TaskInserts(self.names)
        self._held = HeldConnection()  # the enqueue's connection, kept out of the pool between calls
        self._finishes = Finishes(self.names, self._sql, self._connection, self.can_fuse_results)
        self._wakeups = QueueWakeups(self.url, self.names.tasks_channel, poll_interval)
        self._operations = TaskOperations(self.names, self._connection)
        self._workers = WorkerRegistry(self.names, self._connection)
        self._pauses = QueuePauses(self.names, self._connection)
        # the sync API's enqueue: a connection per calling thread (replaced after 5 idle minutes)
        self._blocking = ThreadClients(partial(open_single, self.url, pool_options), close_single, max_idle=300.0)

    settings_options: ClassVar[Mapping[str, str]] = {"schema": "key_prefix", "poll_interval": "poll_interval"}

    def __repr__(self) -> str:
        return f"PostgresTaskQueue(schema={self.schema!r})"

    async def connect(self) -> None:
        """Open the pool and migrate the schema (idempotent)."""
        await self._connection.connect()

    async def close(self) -> None:
        """Stop listening, wake waiters and close the pool (idempotent)."""
        await self._wakeups.close()
        await self._blocking.aclose()
        await self._held.release()
        await self._connection.close()

    # -- enqueue -----------------------------------------------------------------------------

    async def enqueue(self, task: Task) -> str:
        """Store a PENDING task (see :meth:`enqueue_many`)."""
        return (await self.enqueue_many([task]))[0]

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        """Store many tasks with one ``INSERT ... SELECT FROM unnest`` (unique keys and taken ids: the contract's)."""
        if not tasks:
            return []
        pool = await self._connection.client()
        with self._connection.errors():
            return await self._held.run(pool, lambda conn: self._inserts.insert(conn, tasks))

    def enqueue_blocking(self, tasks: Sequence[Task]) -> list[str]:
        """:meth:`enqueue_many` in the calling thread: the same insert, on that thread's own connection and loop."""
        if not tasks:
            return []
        self._connection.current  # noqa: B018 - connected in this process: the schema is migrated
        with self._connection.errors():
            return self._blocking.run(lambda conn: self._inserts.insert(conn, tasks))

    async def enqueue_in_transaction(
        self,
        tasks: Sequence[Task],
        connection: object,
        *,
        events: Sequence[TaskEvent] = (),
        storage: BaseEventStorage | None = None,
    ) -> list[str]:
        """Insert through the caller's asyncpg connection (NOTIFY on its commit); events too on this database."""
        own = storage if isinstance(storage, PostgresEventStorage) else None
        same = own is not None and dsn_identity(own.url) == dsn_identity(self.url)
        return await self._inserts.insert_in_transaction(connection, tasks, events, own if same else None)

    def can_fuse_events(self, events: BaseEventStorage) -> bool:
        """True for a :class:`PostgresEventStorage` (any database: its write is a transaction of its own)."""
        return isinstance(events, PostgresEventStorage)

    async def enqueue_recorded(
        self, tasks: Sequence[Task], events: Sequence[TaskEvent], storage: BaseEventStorage
    ) -> tuple[list[str], list[TaskEvent]]:
        """:meth:`enqueue_many` with the events inserted at the same time, on a connection of ``storage``.

        The two INSERTs run in parallel (PostgreSQL puts them on two cores); the events' transaction
        commits only after the tasks' INSERT has, so no event shows for a task that was not stored.
        Only a batch without unique keys overlaps the two: otherwise, when an id turns out to be
        taken, when the events' write fails, or when the event storage has no connection to give
        before the tasks are in (the enqueue never waits for one), the stored tasks' events are
        handed back.
        """
        if not tasks:
            return [], []
        if not isinstance(storage, PostgresEventStorage) or any(t.unique_key is not None for t in tasks):
            return await super().enqueue_recorded(tasks, events, storage)
        return await enqueue_beside(self.enqueue_many, tasks, events, storage)

    # -- claim and wake-ups ------------------------------------------------------------------

    async def claim_ready(self, queues: Sequence[str], limit: int, *, lease: float, worker_id: str) -> list[Task]:
        """Lease up to ``limit`` ready tasks with one SKIP LOCKED statement."""
        if limit <= 0 or not queues:
            return []
        self._wakeups.claiming(queues)
        pool = await self._connection.client()
        with self._connection.errors():
            rows = await pool.fetch(self._sql.claim, list(dict.fromkeys(queues)), limit, float(lease), worker_id)
        return claimed_tasks(rows)

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Block on NOTIFY for ``queues`` up to ``timeout`` seconds (polling when LISTEN is down)."""
        await self._wakeups.wait(queues, timeout, partial(self._next_due, list(queues)))

    async def _next_due(self, queues: list[str]) -> float | None:
        """Seconds until the earliest scheduled task of ``queues`` is due (database clock), or None."""
        pool = await self._connection.client()
        with self._connection.errors():
            due_in: float | None = await pool.fetchval(self._sql.next_due, queues)
        return due_in

    # -- leases ------------------------------------------------------------------------------

    async def extend(self, leases: Mapping[str, str], lease: float) -> set[str]:
        """Push back every lease still held, in one statement."""
        if not leases:
            return set()
        pool = await self._connection.client()
        with self._connection.errors():
            rows = await pool.fetch(self._sql.extend, list(leases), list(leases.values()), float(lease))
        return {row[0] for row in rows}

    def can_fuse_results(self, results: BaseResultStorage) -> bool:
        """True for a :class:`PostgresResultStorage` on the same database (any schema)."""
        return isinstance(results, PostgresResultStorage) and dsn_identity(results.url) == dsn_identity(self.url)

    async def finish(self, outcomes: Sequence[Outcome], *, results: BaseResultStorage | None = None) -> list[bool]:
        """Apply a batch of token-checked outcomes in one statement (results fused when given)."""
        if not outcomes:
            return []
        return await self._finishes.finish(outcomes, results)

    async def finish_and_claim(
        self,
        outcomes: Sequence[Outcome],
        *,
        results: BaseResultStorage | None = None,
        queues: Sequence[str],
        limit: int,
        lease: float,
        worker_id: str,
    ) -> tuple[list[bool], list[Task]]:
        """Finish, give the freed slots to held tasks and claim for the rest, in one transaction (finishing.py)."""
        if not outcomes or limit <= 0 or not queues:
            return await super().finish_and_claim(
                outcomes, results=results, queues=queues, limit=limit, lease=lease, worker_id=worker_id
            )
        self._wakeups.claiming(queues)
        return await self._finishes.finish_and_claim(
            outcomes, results, list(dict.fromkeys(queues)), limit, lease, worker_id
        )

    async def recover(self) -> list[Task]:
        """Requeue (or fail) RUNNING tasks whose lease deadline passed, by the database clock."""
        pool = await self._connection.client()
        recovered: list[Task] = []
        with self._connection.errors():
            while True:
                async with pool.acquire() as conn, conn.transaction():
                    rows = await conn.fetch(self._sql.recover_select, _RECOVER_BATCH)
                    if not rows:
                        break
                    expired = [leased_task_from_row(row) for row in rows]
                    failed = [task.attempts >= task.max_attempts for task in expired]
                    updated = await conn.fetch(
                        self._sql.recover_update,
                        [task.id for task in expired],
                        ["failed" if dead else "pending" for dead in failed],
                        [
                            encode_error(lease_expired_error(t)) if dead else None
                            for t, dead in zip(expired, failed, strict=True)
                        ],
                    )
                recovered.extend(leased_task_from_row(row) for row in updated)
                if len(rows) < _RECOVER_BATCH:
                    break
        if recovered:
            logger.info("recovered %d task(s) whose lease expired", len(recovered))
        return recovered

    # -- inspection and control --------------------------------------------------------------

    async def get(self, task_id: str) -> Task | None:
        """Return the task, or None."""
        pool = await self._connection.client()
        with self._connection.errors():
            row = await pool.fetchrow(self._sql.get, task_id)
        return None if row is None else strict_task_from_row(row)

    def get_blocking(self, task_id: str) -> Task | None:
        """:meth:`get` in the calling thread: the same query, on that thread's own connection and loop."""
        self._connection.current  # noqa: B018 - connected in this process: the schema is migrated
        with self._connection.errors():
            row = self._blocking.run(lambda conn: conn.fetchrow(self._sql.get, task_id))
        return None if row is None else strict_task_from_row(row)

    async def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Return several tasks in one query, None for unknown ids."""
        if not task_ids:
            return []
        pool = await self._connection.client()
        with self._connection.errors():
            rows = await pool.fetch(self._sql.get_many, list(task_ids))
        found = {row["id"]: strict_task_from_row(row) for row in rows}
        return [found.get(task_id) for task_id in task_ids]

    async def list(
        self, *, status: TaskStatus | None = None, queue: str | None = None, limit: int = 25, offset: int = 0
    ) -> list[Task]:
        """Return tasks filtered by status and queue, newest first."""
        sql, args = self._sql.filtered(
            f"SELECT {TASK_COLUMNS} FROM {{tasks}}",
            None if status is None else [TaskStatus(status).value],
            queue,
        )
        sql += f" ORDER BY created_at DESC, id DESC LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}"
        pool = await self._connection.client()
        with self._connection.errors():
            rows = await pool.fetch(sql, *args, int(limit), int(offset))
        return [strict_task_from_row(row) for row in rows]

    async def count(self, *, status: TaskStatus | None = None, queue: str | None = None) -> int:
        """Count tasks filtered by status and queue."""
        sql, args = self._sql.filtered(
            "SELECT count(*) FROM {tasks}", None if status is None else [TaskStatus(status).value], queue
        )
        pool = await self._connection.client()
        with self._connection.errors():
            return int(await pool.fetchval(sql, *args))

    async def cancel(self, task_id: str) -> bool:
        """Cancel a PENDING or RUNNING task; its lease (if any) is lost."""
        pool = await self._connection.client()
        with self._connection.errors():
            return await pool.fetchval(self._sql.cancel, task_id) is not None

    async def set_paused(self, task_id: str, paused: bool) -> bool:
        """Pause or resume a task that is not terminal."""
        pool = await self._connection.client()
        with self._connection.errors():
            return await pool.fetchval(self._sql.set_paused, task_id, bool(paused)) is not None

    async def purge(self, *, queue: str | None = None, statuses: Sequence[TaskStatus] | None = None) -> int:
        """Delete tasks (all by default); return how many (the dependants of those not ended are released)."""
        sql, args = self._sql.purge(None if statuses is None else [TaskStatus(s).value for s in statuses], queue)
        pool = await self._connection.client()
        with self._connection.errors():
            return int(await pool.fetchval(sql, *args))

    # -- operations (omniq_postgres.operations, omniq_postgres.workers, omniq_postgres.flow) -------

    async def set_queue_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume ``queue`` for every worker (a row of ``<schema>.paused_queues``; a resume NOTIFYs)."""
        await self._pauses.set_paused(queue, paused)

    async def paused_queues(self) -> builtins.list[str]:
        """The paused queues, sorted."""
        return await self._pauses.names()

    async def list_page(self, query: TaskQuery) -> builtins.list[Task]:
        """A page of tasks, newest first, keyset-paged (one query; a top-N sort of the matching tasks)."""
        return await self._operations.list_page(query)

    async def queue_stats(self) -> builtins.list[QueueStats]:
        """Per queue: counts by status, oldest ready age, completions per minute (one scan)."""
        return await self._operations.queue_stats()

    async def retry(self, task_id: str) -> Task | None:
        """Run a FAILED, CANCELLED or EXPIRED task again with a fresh attempt budget (one UPDATE)."""
        return await self._operations.retry(task_id)

    async def register_worker(self, worker: WorkerInfo, ttl: float) -> None:
        """Store or refresh ``worker`` in ``<schema>.workers`` until ``ttl`` seconds from now."""
        await self._workers.register(worker, ttl)

    async def unregister_worker(self, worker_id: str) -> None:
        """Remove a worker from the registry."""
        await self._workers.unregister(worker_id)

    async def list_workers(self) -> builtins.list[WorkerInfo]:
        """Registered workers not expired (database clock), oldest first."""
        return await self._workers.live()
