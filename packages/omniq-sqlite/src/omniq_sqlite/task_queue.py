"""SQLiteTaskQueue: the embedded default task queue.

Each public method is one hop to the database (aiosqlite's thread) running one
job of :mod:`omniq_sqlite.jobs` in one transaction: a batch claim is a single
``UPDATE ... WHERE seq IN (SELECT ... ORDER BY priority DESC, ready_at, seq
LIMIT ?) RETURNING`` under ``BEGIN IMMEDIATE``; a batch finish is one SELECT of the current leases plus
``executemany`` updates (and, fused, the result rows) in one transaction.
A task with ``depends_on`` is stored waiting and made ready by the step that
ends its last dependency, in that step's transaction (:mod:`omniq_sqlite.dependencies`).
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import anyio

from omniq.base import BaseEventStorage, BaseResultStorage, BaseTaskQueue, Capability
from omniq.errors import ConfigurationError
from omniq.models import Outcome, Task, TaskEvent, TaskStatus, encode_result
from omniq_sqlite import flow, jobs, schema
from omniq_sqlite._wake import RESULTS, WORK
from omniq_sqlite.connection import SETTINGS_OPTIONS, sqlite_connection
from omniq_sqlite.event_storage import SQLiteEventStorage, event_rows
from omniq_sqlite.operations import TaskOperations
from omniq_sqlite.records import (
    build_task as _build_task,  # noqa: F401 - benchmarks/record_decode_cost.py
    claim_order,
    encoder,
    leased_row_to_task as _leased_row_to_task,
    row_to_task as _row_to_task,
    task_params as _task_params,
    to_ts,
    where,
)
from omniq_sqlite.workers import WorkerRegistry

if TYPE_CHECKING:
    import builtins
    from collections.abc import Mapping, Sequence

    from omniq.monitoring import QueueStats, TaskQuery, WorkerInfo
    from omniq_sqlite.database import Database

__all__ = ["SQLiteTaskQueue"]

_ETA_MARGIN = 0.005  # seconds wait_for_work oversleeps a due eta, so the task is claimable when it returns
#: enqueue batches up to this size may run on the caller's thread when the database is idle (Database.write_small).
_SMALL_BATCH = 16


def _same_path(a: str, b: str) -> bool:
    try:
        return a == b or os.path.samefile(a, b)
    except OSError:
        return False


def _same_file(connection: sqlite3.Connection, path: str) -> bool:
    """Whether ``connection``'s main database is the file at ``path``."""
    for _seq, name, file in connection.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return bool(file) and _same_path(file, path)
    return False


class SQLiteTaskQueue(BaseTaskQueue):
    """Task queue in one SQLite file, safe for many worker and producer processes on one host."""

    capabilities = frozenset(
        {
            Capability.MULTI_PROCESS,
            Capability.BLOCKING_WAIT,
            Capability.FUSED_RESULTS,
            Capability.DURABLE,
            Capability.FORK_SAFE,
            Capability.BLOCKING_READS,
            Capability.WORKER_REGISTRY,
            Capability.FLOW_CONTROL,
            Capability.QUEUE_PAUSE,
            Capability.TRANSACTIONAL_ENQUEUE,
            Capability.DEPENDENCIES,
            Capability.BLOCKING_ENQUEUE,
        }
    )

    backend_name = "sqlite"
    settings_options = SETTINGS_OPTIONS

    def __init__(self, url: str | os.PathLike[str] | None = None, **options: Any) -> None:
        """Build unconnected; ``options``: see :class:`omniq_sqlite.connection.Options`."""
        self.options, self._connection = sqlite_connection(url, **options)
        self.path, self.url = self.options.path, self.options.url
        self._operations = TaskOperations(self._connection)
        self._workers = WorkerRegistry(self._connection)

    def __repr__(self) -> str:
        return f"SQLiteTaskQueue({self.url!r})"

    async def connect(self) -> None:
        """Open this process's database on the file (or join it); the first to open migrates the schema."""
        await self._connection.connect()

    async def close(self) -> None:
        """Leave the database; the last component of the process on the file closes it."""
        await self._connection.close()

    async def enqueue(self, task: Task) -> str:
        """Store a PENDING task (or return the id of the live task with its unique_key)."""
        return (await self.enqueue_many([task]))[0]

    async def enqueue_many(self, tasks: Sequence[Task]) -> list[str]:
        """Store many tasks in one transaction (``executemany`` when none has a unique_key)."""
        if not tasks:
            return []
        db = await self._connection.client()
        rows = [_task_params(task) for task in tasks]
        if len(rows) <= _SMALL_BATCH:
            return await db.write_small(jobs.enqueue_job, rows, notify=WORK)
        ids = await db.write(jobs.enqueue_job, rows)
        db.notify(WORK)
        return ids

    def enqueue_blocking(self, tasks: Sequence[Task]) -> list[str]:
        """:meth:`enqueue_many` in the calling thread: the same insert, under the connection's lock."""
        if not tasks:
            return []
        db = self._connection.current
        ids = db.write_blocking(jobs.enqueue_job, [_task_params(task) for task in tasks])
        db.notify(WORK, here=True)
        return ids

    async def enqueue_in_transaction(
        self,
        tasks: Sequence[Task],
        connection: object,
        *,
        events: Sequence[TaskEvent] = (),
        storage: BaseEventStorage | None = None,
    ) -> list[str]:
        """Insert through the caller's ``sqlite3`` connection to this file, in its transaction (see the contract).

        The statements run on the calling thread (``connection`` is the caller's, with its own
        thread rules). SQLite cannot say when the caller commits: workers are hinted now and
        find the tasks then, or at their next poll. The events go in the same transaction when
        ``storage`` is a :class:`SQLiteEventStorage` on this file.
        """
        if not isinstance(connection, sqlite3.Connection):
            raise ConfigurationError(
                f"connection= must be a sqlite3 connection for the sqlite task queue, "
                f"not {type(connection).__name__}: nothing was enqueued"
            )
        db = await self._connection.client()  # the schema is migrated before the caller's insert
        if not tasks:
            return []
        try:
            if not _same_file(connection, self.path):
                raise ConfigurationError(
                    f"connection= is not open on this task queue's database ({self.path}): nothing was enqueued"
                )
            ids = jobs.enqueue_job(connection, [_task_params(task) for task in tasks])
            stored = [event for event, task, task_id in zip(events, tasks, ids, strict=False) if task.id == task_id]
            if stored and isinstance(storage, SQLiteEventStorage) and _same_path(storage.path, self.path):
                connection.executemany(schema.INSERT_EVENT, event_rows(stored))
        except sqlite3.ProgrammingError as exc:  # a closed connection, or one of another thread
            raise ConfigurationError(f"connection= cannot be used here ({exc}): nothing was enqueued") from exc
        db.notify(WORK, here=True)
        return ids

    async def claim_ready(self, queues: Sequence[str], limit: int, *, lease: float, worker_id: str) -> list[Task]:
        """Lease up to ``limit`` ready tasks with one UPDATE ... RETURNING under BEGIN IMMEDIATE."""
        if limit <= 0 or not queues:
            return []
        db = await self._connection.client()
        return _claimed(await db.write(jobs.claim_job, tuple(dict.fromkeys(queues)), limit, lease, worker_id))

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Sleep until a hint arrives, the next scheduled task is due, or ``timeout`` passes."""
        db = await self._connection.client()
        waiter = db.hub.add_waiter(WORK)
        try:
            # Registered first, checked second: a task enqueued in between is seen either way.
            next_ready = await db.read(jobs.next_ready_job, tuple(dict.fromkeys(queues)))
            delay = timeout
            if next_ready is not None:
                # A little past the eta: the loop's monotonic timer and the wall clock may disagree by a hair.
                delay = min(timeout, next_ready - time.time() + _ETA_MARGIN)
            if next_ready is not None and next_ready <= time.time():
                return
            with anyio.move_on_after(delay):
                await waiter.event.wait()
        finally:
            db.hub.remove_waiter(WORK, waiter)

    async def extend(self, leases: Mapping[str, str], lease: float) -> set[str]:
        """Push back every lease still held, in one statement per 500 leases."""
        if not leases:
            return set()
        db = await self._connection.client()
        return await db.write(jobs.extend_job, list(leases.items()), lease)

    def can_fuse_results(self, results: BaseResultStorage) -> bool:
        """True when ``results`` is a SQLite result storage on the same file."""
        from omniq_sqlite.result_storage import SQLiteResultStorage

        return isinstance(results, SQLiteResultStorage) and results.path == self.path

    async def finish(self, outcomes: Sequence[Outcome], *, results: BaseResultStorage | None = None) -> list[bool]:
        """Apply outcomes token-checked in one transaction; fused, write the accepted results too."""
        if not outcomes:
            return []
        prepared = self._prepared(outcomes, results)
        db = await self._connection.client()
        flags, woke = await db.write(jobs.finish_job, prepared)
        _notify_finished(db, prepared, flags, woke)
        return flags

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
        """:meth:`finish` and :meth:`claim_ready` in one transaction: the claim takes the slots the finish freed."""
        if not outcomes or limit <= 0 or not queues:
            return await super().finish_and_claim(
                outcomes, results=results, queues=queues, limit=limit, lease=lease, worker_id=worker_id
            )
        prepared = self._prepared(outcomes, results)
        db = await self._connection.client()
        (flags, woke), rows = await db.write(
            jobs.finish_and_claim_job, prepared, tuple(dict.fromkeys(queues)), limit, lease, worker_id
        )
        _notify_finished(db, prepared, flags, woke)
        return flags, _claimed(rows)

    def _prepared(
        self, outcomes: Sequence[Outcome], results: BaseResultStorage | None
    ) -> list[tuple[Outcome, bytes | None, tuple[Any, ...] | None]]:
        """Each outcome with its encoded error and, fused, its result row."""
        fuse = results is not None and self.can_fuse_results(results)
        prepared = []
        for outcome in outcomes:
            error = encoder.encode(outcome.error) if outcome.error is not None else None
            result_row = None
            if fuse and outcome.result is not None:
                result = outcome.result
                result_row = (result.task_id, encode_result(result), to_ts(result.expires_at))
            prepared.append((outcome, error, result_row))
        return prepared

    async def get(self, task_id: str) -> Task | None:
        """Return the task with that id, or None."""
        return (await self.get_many([task_id]))[0]

    def get_blocking(self, task_id: str) -> Task | None:
        """:meth:`get` in the calling thread: the same select, under the connection's lock."""
        return self._connection.current.read_blocking(jobs.select_many_job, [task_id]).get(task_id)

    async def get_many(self, task_ids: Sequence[str]) -> list[Task | None]:
        """Return several tasks in one hop."""
        if not task_ids:
            return []
        db = await self._connection.client()
        found = await db.read(jobs.select_many_job, list(dict.fromkeys(task_ids)))
        return [found.get(task_id) for task_id in task_ids]

    async def list(
        self, *, status: TaskStatus | None = None, queue: str | None = None, limit: int = 25, offset: int = 0
    ) -> list[Task]:
        """Return tasks filtered by status and queue, newest first."""
        where_sql, params = where(status, queue)
        sql = (
            f"SELECT {schema.TASK_COLUMNS} FROM {schema.TASKS}{where_sql} "
            "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
        )
        db = await self._connection.client()
        rows = await db.read(jobs.fetch_job, sql, [*params, limit, offset])
        return [_row_to_task(row) for row in rows]

    async def count(self, *, status: TaskStatus | None = None, queue: str | None = None) -> int:
        """Count tasks filtered by status and queue."""
        where_sql, params = where(status, queue)
        db = await self._connection.client()
        rows = await db.read(jobs.fetch_job, f"SELECT count(*) FROM {schema.TASKS}{where_sql}", params)
        return int(rows[0][0])

    async def cancel(self, task_id: str) -> bool:
        """Cancel a PENDING or RUNNING task (its holder loses the lease, and its concurrency slot goes to a held task)."""
        db = await self._connection.client()
        cancelled, woke = await db.write(flow.cancel_job, task_id)
        if woke:
            db.notify(WORK)
        return cancelled

    async def set_paused(self, task_id: str, paused: bool) -> bool:
        """Pause or resume a task that is not terminal."""
        db = await self._connection.client()
        changed = bool(await db.write(jobs.rowcount_job, schema.SET_PAUSED, (int(paused), time.time(), task_id)))
        if changed and not paused:
            db.notify(WORK)
        return changed

    async def purge(self, *, queue: str | None = None, statuses: Sequence[TaskStatus] | None = None) -> int:
        """Delete tasks (all by default, else those of ``queue`` and/or ``statuses``)."""
        if statuses is not None and not statuses:
            return 0
        db = await self._connection.client()
        deleted, woke = await db.write(flow.purge_job, queue, statuses)
        if woke:
            db.notify(WORK)
        return deleted

    async def recover(self) -> builtins.list[Task]:  # `list` is a method name in this class
        """Requeue (or fail, when out of attempts) RUNNING tasks whose lease deadline is past."""
        db = await self._connection.client()
        recovered, woke = await db.write(jobs.recover_job)
        if woke or any(task.status is TaskStatus.PENDING for task in recovered):
            db.notify(WORK)
        return recovered

    # -- operations (omniq_sqlite.operations, omniq_sqlite.workers) ------------------------------

    async def list_page(self, query: TaskQuery) -> builtins.list[Task]:
        """A page of tasks, newest first, by key: one walk of the (created_at, id) index."""
        return await self._operations.list_page(query)

    async def queue_stats(self) -> builtins.list[QueueStats]:
        """Per queue: counts by status, oldest ready age, completions per minute (one scan)."""
        return await self._operations.queue_stats()

    async def retry(self, task_id: str) -> Task | None:
        """Run a FAILED, CANCELLED or EXPIRED task again with a fresh attempt budget (one UPDATE)."""
        return await self._operations.retry(task_id)

    async def register_worker(self, worker: WorkerInfo, ttl: float) -> None:
        """Store or refresh ``worker`` in ``omniq_workers`` until ``ttl`` seconds from now."""
        await self._workers.register(worker, ttl)

    async def unregister_worker(self, worker_id: str) -> None:
        """Remove a worker's row; an unknown id is ignored."""
        await self._workers.unregister(worker_id)

    async def list_workers(self) -> builtins.list[WorkerInfo]:
        """Registered workers not expired (host clock), oldest first."""
        return await self._workers.live()

    # -- flow control (omniq_sqlite.flow) --------------------------------------------------------

    async def set_queue_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume ``queue`` for every process on the file; a resume wakes waiting workers."""
        db = await self._connection.client()
        if await db.write(flow.pause_job, queue, paused) and not paused:
            db.notify(WORK)

    async def paused_queues(self) -> builtins.list[str]:
        """The paused queues' names, sorted."""
        db = await self._connection.client()
        return await db.read(flow.paused_queues_job)


def _claimed(rows: list[Any]) -> list[Task]:
    """The tasks of claimed rows, in claim order."""
    try:
        rows.sort(key=claim_order)  # RETURNING does not keep the subquery's order
    except TypeError:  # a corrupted eta (text in a REAL column): that batch keeps the engine's order
        pass
    return [_leased_row_to_task(row) for row in rows]


def _notify_finished(
    db: Database, prepared: list[tuple[Outcome, bytes | None, tuple[Any, ...] | None]], flags: list[bool], woke: bool
) -> None:
    """Wake claimers when the finish made tasks claimable, and result waiters for the results it stored."""
    if woke or any(flag and o.kind not in jobs.TERMINAL_KINDS for flag, (o, _, _) in zip(flags, prepared, strict=True)):
        db.notify(WORK)
    stored = [row[0] for (_, _, row), flag in zip(prepared, flags, strict=True) if flag and row is not None]
    if stored:
        db.notify(RESULTS, stored)
